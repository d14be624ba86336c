"""The RAER crop cache and the uint8 frames: the same normalised tensors from every path, and a cache that an
interrupted build or a damaged file can never make the loader read wrong crops from."""

import json
import warnings

import numpy as np
import pytest
import torch

from affectlab.datasets import RaerDataset, load_raer_split, make_synthetic_raer, write_crop_cache
from affectlab.datasets.errors import DatasetWarning
from affectlab.datasets.raer import CLIP_MEAN, CLIP_STD, normalise_pixels


@pytest.fixture
def small_raer(tmp_path):
    root = make_synthetic_raer(tmp_path / "raer", num_train=3, num_test=0, num_frames=5)
    return root, load_raer_split(root, "train")


def items(dataset, seed=0):
    """Every item of the dataset with the same TSN draws whatever the dataset (train sampling is random)."""
    out = []
    for index in range(len(dataset)):
        torch.manual_seed(seed + index)
        out.append(dataset[index])
    return out


def test_uint8_frames_normalise_to_the_same_floats_on_every_path(small_raer, tmp_path):
    root, clips = small_raer
    options = dict(num_segments=4, image_size=24, train=True)
    floats = items(RaerDataset(root, clips, **options))  # the old path: normalised in the worker
    pixels = items(RaerDataset(root, clips, normalise=False, **options))
    write_crop_cache(RaerDataset(root, clips, **options), tmp_path / "cache")
    cached = items(RaerDataset(root, clips, cache=tmp_path / "cache", normalise=False, **options))
    cached_floats = items(RaerDataset(root, clips, cache=tmp_path / "cache", **options))
    for old, raw, from_cache, from_cache_floats in zip(floats, pixels, cached, cached_floats):
        for stream in ("face", "context"):
            assert raw[stream].dtype == torch.uint8 and raw[stream].shape == (4, 3, 24, 24)
            assert torch.equal(raw[stream], from_cache[stream])
            on_device = normalise_pixels(raw[stream], CLIP_MEAN, CLIP_STD)
            assert torch.equal(on_device, old[stream]) and torch.equal(from_cache_floats[stream], old[stream])
            expected = (raw[stream].double() / 255 - torch.tensor(CLIP_MEAN).double().view(3, 1, 1)) / torch.tensor(
                CLIP_STD
            ).double().view(3, 1, 1)
            torch.testing.assert_close(on_device.double(), expected, atol=1e-5, rtol=0)


def test_datamodule_normalises_uint8_batches_after_transfer(tmp_path):
    from affectlab.lab.config import load_config
    from affectlab.lab.raer.data import RaerDataModule

    root = make_synthetic_raer(tmp_path / "raer", num_train=5, num_test=5, num_frames=3)
    cfg = load_config("raer", [f"data.root={root}", "data.num_segments=2", "data.crop_cache=null"], environ={})
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    datamodule = RaerDataModule(cfg.data, image_size=16, mean=mean, std=std)
    datamodule.setup("test")
    batch = torch.utils.data.default_collate([datamodule.test_set[0], datamodule.test_set[1]])
    assert batch["face"].dtype == torch.uint8
    batch = datamodule.on_after_batch_transfer(batch, 0)
    reference = RaerDataset(root, datamodule.test_set.clips, num_segments=2, image_size=16, mean=mean, std=std)
    assert torch.equal(batch["face"][1], reference[1]["face"])
    assert torch.equal(batch["context"][0], reference[0]["context"])


def test_truncated_cache_file_is_detected_never_read_and_rebuilt(small_raer, tmp_path):
    root, clips = small_raer
    options = dict(num_segments=4, image_size=24)
    plain = RaerDataset(root, clips, **options)
    folder = write_crop_cache(plain, tmp_path / "cache")
    damaged = folder / clips[1].clip_dir / "faces.npy"
    untouched = folder / clips[0].clip_dir / "faces.npy"
    damaged.write_bytes(damaged.read_bytes()[:-100])  # an interrupted copy: a valid header, fewer bytes
    before = untouched.stat().st_mtime_ns

    cached = RaerDataset(root, clips, cache=folder, **options)
    with pytest.warns(DatasetWarning, match=rf"{clips[1].clip_dir}.*damaged or stale"):
        item = cached[1]
    assert torch.equal(item["face"], plain[1]["face"])  # decoded from the frames instead
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached[1]  # warned once per clip

    write_crop_cache(plain, folder)
    assert untouched.stat().st_mtime_ns == before  # the good clips are kept
    rebuilt = RaerDataset(root, clips, cache=folder, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(rebuilt[1]["face"], plain[1]["face"])
    assert rebuilt._cache_verified == {1}


def test_a_flipped_byte_of_the_same_size_is_caught_by_sha256(small_raer, tmp_path):
    root, clips = small_raer
    plain = RaerDataset(root, clips, num_segments=2, image_size=16)
    folder = write_crop_cache(plain, tmp_path / "cache")
    path = folder / clips[0].clip_dir / "contexts.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(DatasetWarning, match="damaged or stale"):
        item = RaerDataset(root, clips, num_segments=2, image_size=16, cache=folder)[0]
    assert torch.equal(item["context"], plain[0]["context"])


def test_an_interrupted_cache_build_resumes_where_it_stopped(small_raer, tmp_path, monkeypatch):
    root, clips = small_raer
    dataset = RaerDataset(root, clips, num_segments=2, image_size=16)
    built = []
    original = RaerDataset.all_crops

    def crash_on_third(self, index, *args, **kwargs):
        if len(built) == 2:
            raise KeyboardInterrupt
        built.append(index)
        return original(self, index, *args, **kwargs)

    monkeypatch.setattr(RaerDataset, "all_crops", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        write_crop_cache(dataset, tmp_path / "cache")
    assert not (tmp_path / "cache" / "crops.json").exists()  # so no dataset reads the half-built cache
    assert RaerDataset(root, clips, num_segments=2, image_size=16, cache=tmp_path / "cache").cache is None

    built.clear()
    monkeypatch.setattr(RaerDataset, "all_crops", original)
    calls = []
    monkeypatch.setattr(RaerDataset, "all_crops", lambda self, index, *a, **k: calls.append(index) or
                        original(self, index, *a, **k))
    write_crop_cache(dataset, tmp_path / "cache")
    assert calls == [2]  # the two finished clips were kept
    manifest = json.loads((tmp_path / "cache" / "crops.json").read_text())
    assert sorted(manifest["clips"]) == sorted(clip.clip_dir for clip in clips)
    for record in manifest["clips"].values():
        assert record["frames"] == 5 and record["faces.npy"]["bytes"] == 128 + 5 * 3 * 16 * 16


def test_cache_in_the_old_layout_is_refused(small_raer, tmp_path):
    from affectlab.datasets import DatasetError

    root, clips = small_raer
    dataset = RaerDataset(root, clips, num_segments=2, image_size=16)
    folder = write_crop_cache(dataset, tmp_path / "cache")
    manifest = json.loads((folder / "crops.json").read_text())
    del manifest["layout"]
    (folder / "crops.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"crops.json: crops made with .*expected .*'layout': 'uint8-TCHW-v2'"):
        RaerDataset(root, clips, num_segments=2, image_size=16, cache=folder)


def test_cache_lacking_clips_decodes_them_with_one_warning(small_raer, tmp_path):
    root, clips = small_raer
    write_crop_cache(RaerDataset(root, clips[:2], num_segments=2, image_size=16), tmp_path / "cache")
    with pytest.warns(DatasetWarning, match=r"1 of 3 clips are not in the crop cache"):
        dataset = RaerDataset(root, clips, num_segments=2, image_size=16, cache=tmp_path / "cache")
    plain = RaerDataset(root, clips, num_segments=2, image_size=16)
    assert torch.equal(dataset[2]["face"], plain[2]["face"])
    assert np.isfinite(dataset[0]["context"].numpy()).all()


@pytest.mark.parametrize("video", [False, True])
def test_all_crops_in_chunks_equal_the_sampled_crops(tmp_path, video):
    root = make_synthetic_raer(tmp_path / "raer", num_train=1, num_test=0, num_frames=5, video=video)
    dataset = RaerDataset(root, load_raer_split(root, "train"), num_segments=5, image_size=16, normalise=False)
    faces, contexts = dataset.all_crops(0, chunk=2)
    item = dataset[0]  # evaluation sampling of 5 segments of 5 frames: every frame
    assert torch.equal(torch.from_numpy(faces), item["face"]) and torch.equal(torch.from_numpy(contexts), item["context"])
