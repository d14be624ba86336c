"""Frozen-encoder feature cache: the cached embeddings give the frozen encoder's logits and a run's metrics, a
damaged file is recomputed, and the cache folder follows the encoder's weights and the crop settings."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from affectlab.datasets import RaerDataset, load_raer_split, make_synthetic_raer
from affectlab.datasets.raer import tsn_indices
from affectlab.lab.config import load_config
from affectlab.lab.raer.features import FrameFeatures, frame_features
from affectlab.lab.raer.data import RaerDataModule
from affectlab.lab.raer.module import ClipCaerModule
from affectlab.lab.raer.nets import build_net
from affectlab.models import ClipCaer, create_clip
from builders import TINY_RUN

T = 4


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is faster (conftest)


@pytest.fixture(scope="module")
def raer(tmp_path_factory) -> Path:
    return make_synthetic_raer(tmp_path_factory.mktemp("raer"), num_train=6, num_test=0, num_frames=8)


@pytest.fixture(scope="module")
def frozen_net() -> ClipCaer:
    torch.manual_seed(0)
    clip = create_clip("affectlab-tiny")
    return ClipCaer(clip.model, clip.tokenizer, ["neutral", "enjoying", "confused"], num_frames=T,
                    freeze_image_encoder=True)


def dataset(root: Path, train: bool, **options) -> RaerDataset:
    return RaerDataset(root, load_raer_split(root, "train"), num_segments=T, image_size=48, train=train, **options)


@pytest.mark.parametrize("train", [True, False])
def test_cached_embeddings_give_the_frozen_encoders_logits(raer, frozen_net, tmp_path, train):
    frames = dataset(raer, train)
    cached = frame_features(frames, frozen_net.image_encoder, tmp_path, ["face", "context"])
    assert cached.built == 2 * len(frames)
    net = frozen_net.eval()
    for index in range(len(frames)):
        torch.manual_seed(index)  # training draws random frames: both sides must draw the same ones
        clip = frames[index]
        torch.manual_seed(index)
        embedded = cached[index]
        assert embedded["face"].shape == (T, 64) and embedded["label"] == clip["label"]
        with torch.no_grad():
            expected = net(face=clip["face"][None], context=clip["context"][None])
            got = net(face=embedded["face"][None], context=embedded["context"][None])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_second_build_reads_the_cache_and_a_damaged_file_is_recomputed(raer, frozen_net, tmp_path):
    frames = dataset(raer, train=False)
    first = frame_features(frames, frozen_net.image_encoder, tmp_path, ["face"])
    assert first.built == len(frames)
    assert frame_features(frames, frozen_net.image_encoder, tmp_path, ["face"]).built == 0
    good = first[0]["face"].clone()

    array = next(first.root.rglob("face.npy"))
    damaged = bytearray(array.read_bytes())
    damaged[-4:] = b"\xff\xff\xff\x7f"  # same size, one embedding turned into NaN
    array.write_bytes(bytes(damaged))
    assert sum(not first.is_cached(index, "face") for index in range(len(frames))) == 1

    again = frame_features(frames, frozen_net.image_encoder, tmp_path, ["face"])
    assert again.built == 1
    assert all(again.is_cached(index, "face") for index in range(len(frames)))
    torch.testing.assert_close(again[0]["face"], good)


def test_clips_are_read_from_one_packed_array_which_is_reused_and_rebuilt_when_damaged(raer, frozen_net, tmp_path):
    frames = dataset(raer, train=False)
    first = frame_features(frames, frozen_net.image_encoder, tmp_path, ["face"])
    (pack,) = (first.root / "packed").glob("*-face.npy")
    assert np.load(pack, mmap_mode="r").shape == (sum(frames.frame_counts), 64)
    expected = [first[index]["face"].clone() for index in range(len(first))]
    for index, clip in enumerate(frames.clips):  # the pack holds each clip's own file, clip after clip
        own = np.load(first.root / clip.clip_dir / "face.npy")
        torch.testing.assert_close(expected[index], torch.from_numpy(own[tsn_indices(len(own), T, train=False)]))

    written = pack.stat().st_mtime_ns
    assert frame_features(frames, frozen_net.image_encoder, tmp_path, ["face"]).built == 0
    assert pack.stat().st_mtime_ns == written  # the same clips and files: the same pack, not written again

    damaged = bytearray(pack.read_bytes())
    damaged[-4:] = b"\xff\xff\xff\x7f"  # same size, the last clip's last embedding turned into NaN
    pack.write_bytes(bytes(damaged))
    again = frame_features(frames, frozen_net.image_encoder, tmp_path, ["face"])
    assert again.built == 0  # the clips' own files are fine: only the pack is written again from them
    shipped = pickle.loads(pickle.dumps(again))  # as a spawned loader worker gets it: it maps the pack itself
    for index in range(len(frames)):
        torch.testing.assert_close(again[index]["face"], expected[index])
        torch.testing.assert_close(shipped[index]["face"], expected[index])


def test_cached_clips_are_read_without_loader_workers(tmp_path):
    cfg = load_config("raer", [*TINY_RUN, "model.freeze_image_encoder=true", f"data.feature_cache={tmp_path}",
                               "data.num_workers=2", "data.crop_cache=null"], environ={})
    net, _, clip = build_net(cfg)
    datamodules = [RaerDataModule(cfg.data, image_size=clip.image_size, mean=clip.mean, std=clip.std,
                                  frozen_encoder=encoder) for encoder in (net.image_encoder, None)]
    for datamodule in datamodules:
        datamodule.setup("fit")
    cached, frames = datamodules
    assert [cached.train_dataloader().num_workers, cached.val_dataloader().num_workers] == [0, 0]
    assert [frames.train_dataloader().num_workers, frames.val_dataloader().num_workers] == [2, 2]


def test_cache_folder_follows_encoder_weights_and_crop_settings(raer, frozen_net, tmp_path):
    frames = dataset(raer, train=False)
    base = frame_features(frames, frozen_net.image_encoder, tmp_path, ["face"]).root
    assert json.loads((base / "key.json").read_text())["face_margin"] == 20

    other_encoder = copy.deepcopy(frozen_net.image_encoder)
    with torch.no_grad():
        next(other_encoder.parameters()).add_(1e-3)
    assert frame_features(frames, other_encoder, tmp_path, ["face"]).root != base
    wider = dataset(raer, train=False, face_margin=30)
    assert frame_features(wider, frozen_net.image_encoder, tmp_path, ["face"]).root != base
    assert frame_features(frames, frozen_net.image_encoder, tmp_path, ["face"]).root == base


def test_frozen_training_gives_the_same_metrics_with_and_without_the_cache(tmp_path):
    def frozen_fit(cache: str) -> dict[str, float]:
        cfg = load_config("raer", [*TINY_RUN, "model.freeze_image_encoder=true", f"data.feature_cache={cache}",
                                   "data.crop_cache=null"], environ={})
        L.seed_everything(cfg.seed, workers=True)
        net, classes, clip = build_net(cfg)
        datamodule = RaerDataModule(cfg.data, image_size=clip.image_size, mean=clip.mean, std=clip.std,
                                    seed=cfg.seed, frozen_encoder=net.image_encoder, streams=cfg.model.streams)
        module = ClipCaerModule(net, classes, cfg.optim, cfg.model.streams, contexts=cfg.data.contexts)
        trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                            default_root_dir=tmp_path)
        trainer.fit(module, datamodule=datamodule)
        validation = {k: float(v) for k, v in trainer.callback_metrics.items()}
        test = trainer.test(module, datamodule=datamodule, verbose=False)[0]
        return {**validation, **test}, datamodule

    uncached, frames = frozen_fit("null")
    cached, embedded = frozen_fit(str(tmp_path / "features"))
    assert isinstance(embedded.train_set, FrameFeatures) and not isinstance(frames.train_set, FrameFeatures)
    assert "val/uar" in uncached and "test/uar" in uncached and cached.keys() == uncached.keys()
    for name, value in uncached.items():
        assert cached[name] == pytest.approx(value, abs=1e-5), name
