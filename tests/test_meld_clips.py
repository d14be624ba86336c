"""MELD's clips: found in both layouts, read into a video token (a frozen CLIP on frames spread over the clip) and a
speech token (log-mel statistics of the sound, read with decord), cached per clip, with missing, silent and damaged
clips counted, and the feature model of meld.py reading both tokens. The mp4 files are H.264 + AAC, written here
with PyAV."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.video import read_audio
from affectlab.fusion.textualize import load_cue_tables, write_synthetic_cue_tables
from affectlab.lab.config import ConfigError, load_config
from affectlab.lab.meld import main
from affectlab.lab.meld.data import ClipVectors, Sample, build_items
from affectlab.lab.meld.train import check_config
from affectlab.lab.meld.clips import ClipEncoder, clip_features, find_clip
from affectlab.models.audio import log_mel_statistics, mel_filterbank
from builders import write_mp4

RATE = 16000


def tone(hz: float, seconds: float = 0.5) -> np.ndarray:
    return 0.3 * np.sin(2 * math.pi * hz * np.arange(int(RATE * seconds)) / RATE)


def coloured(rgb: tuple[int, int, int], count: int = 6, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(sum(rgb))
    return [np.clip(np.array(rgb)[None, None] + rng.integers(-10, 10, (size, size, 3)), 0, 255).astype(np.uint8)
            for _ in range(count)]


@pytest.fixture(scope="module")
def encoder() -> ClipEncoder:
    torch.manual_seed(0)
    return ClipEncoder("affectlab-tiny", None, frames=4, sample_rate=RATE, n_mels=16)


def test_log_mel_statistics_of_a_tone_peak_in_the_tones_band():
    bank = mel_filterbank(512, RATE, 40)
    assert bank.shape == (257, 40) and (bank >= 0).all() and (bank.max(dim=0).values > 0.5).all()  # no empty band
    centres = (bank * torch.linspace(0, RATE / 2, 257)[:, None]).sum(0) / bank.sum(0)
    for hz in (300.0, 1000.0, 4000.0):
        stats = log_mel_statistics(torch.from_numpy(tone(hz)), RATE, n_mels=40)
        assert stats.shape == (80,)
        loudest = int(stats[:40].argmax())
        assert abs(float(centres[loudest]) - hz) < 0.25 * hz  # the loudest band is the tone's
        assert float(stats[40:].max()) < 1.0  # a steady tone: little change over time
    with pytest.raises(ValueError, match="empty"):
        log_mel_statistics(torch.zeros(0), RATE)


def test_clips_are_found_in_either_layout(tmp_path):
    ours = write_mp4(tmp_path / "a" / "dev" / "dia3_utt1.mp4", coloured((200, 0, 0)))
    raw = write_mp4(tmp_path / "b" / "train_splits" / "dia0_utt2.mp4", coloured((0, 200, 0)))
    assert find_clip(tmp_path / "a", "dev/dia3_utt1") == ours
    assert find_clip(tmp_path / "b", "train/dia0_utt2") == raw
    assert find_clip(tmp_path / "a", "train/dia3_utt1") is None  # the split matters: ids repeat across splits


def test_the_sound_track_is_read_at_the_asked_rate_and_a_silent_file_has_none(tmp_path):
    loud = write_mp4(tmp_path / "loud.mp4", coloured((9, 9, 9)), tone(440, 1.0))
    silent = write_mp4(tmp_path / "silent.mp4", coloured((9, 9, 9)))
    sound = read_audio(loud, RATE)
    assert sound.dtype == np.float32 and abs(len(sound) - RATE) < 0.1 * RATE and 0.2 < np.abs(sound).max() < 0.4
    assert read_audio(silent, RATE) is None
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 50)
    with pytest.raises(DatasetError, match="junk.mp4"):
        read_audio(tmp_path / "junk.mp4", RATE)


def test_clip_vectors_follow_the_clip_are_cached_and_counted(tmp_path, encoder, monkeypatch):
    clips = tmp_path / "clips"
    write_mp4(clips / "train" / "dia0_utt0.mp4", coloured((220, 30, 30)), tone(300))
    write_mp4(clips / "train" / "dia1_utt0.mp4", coloured((220, 30, 30)), tone(300))
    write_mp4(clips / "train" / "dia2_utt0.mp4", coloured((30, 30, 220)), tone(3000))
    write_mp4(clips / "train" / "dia3_utt0.mp4", coloured((30, 220, 30)))  # no sound
    samples = [Sample(f"train/dia{i}_utt0", 0, "hi", f"row {i}") for i in range(5)]  # dia4 has no clip
    cache = tmp_path / "cache"
    vectors, counts = clip_features(samples, clips, encoder, cache)
    assert (counts.found, counts.missing, counts.silent, counts.skipped) == (4, 1, 1, 0)
    assert vectors["train/dia0_utt0"]["video"].shape == (encoder.sizes["video"],)
    assert vectors["train/dia0_utt0"]["speech"].shape == (32,)
    assert vectors["train/dia3_utt0"]["speech"] is None and vectors["train/dia4_utt0"] == {"video": None,
                                                                                          "speech": None}
    same = np.linalg.norm(vectors["train/dia0_utt0"]["video"] - vectors["train/dia1_utt0"]["video"])
    other = np.linalg.norm(vectors["train/dia0_utt0"]["video"] - vectors["train/dia2_utt0"]["video"])
    assert same < 0.5 * other
    assert np.abs(vectors["train/dia0_utt0"]["speech"] - vectors["train/dia1_utt0"]["speech"]).max() < 0.5
    assert np.abs(vectors["train/dia0_utt0"]["speech"] - vectors["train/dia2_utt0"]["speech"]).max() > 2

    def no_decoding(self, path):
        raise AssertionError(f"{path} decoded again although it is cached")

    monkeypatch.setattr(ClipEncoder, "__call__", no_decoding)
    again, _ = clip_features(samples, clips, encoder, cache)
    assert all(np.array_equal(again[k]["video"], v["video"]) for k, v in vectors.items() if v["video"] is not None)
    monkeypatch.undo()
    changed = clips / "train" / "dia1_utt0.mp4"
    write_mp4(changed, coloured((30, 30, 220)), tone(3000))  # replaced: computed again, not read from the cache
    os.utime(changed, ns=(1, 1))
    fresh, _ = clip_features(samples, clips, encoder, cache)
    assert np.allclose(fresh["train/dia1_utt0"]["video"], vectors["train/dia2_utt0"]["video"], atol=1e-4)


def test_a_damaged_clip_names_its_file_or_is_skipped_and_counted(tmp_path, encoder):
    clips = tmp_path / "clips"
    write_mp4(clips / "dev" / "dia0_utt0.mp4", coloured((100, 100, 100)), tone(500))
    (clips / "dev" / "dia1_utt0.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    samples = [Sample(f"dev/dia{i}_utt0", 0, "hi", f"row {i}") for i in range(2)]
    with pytest.raises(DatasetError, match="dia1_utt0.mp4"):
        clip_features(samples, clips, encoder, tmp_path / "cache")
    vectors, counts = clip_features(samples, clips, encoder, tmp_path / "cache", on_bad_clip="skip")
    assert (counts.found, counts.skipped) == (1, 1) and counts.skipped_files[0].endswith("dia1_utt0.mp4")
    assert vectors["dev/dia1_utt0"] == {"video": None, "speech": None}


def test_the_feature_model_reads_the_clip_tokens_masked_where_absent(tmp_path):
    folder = write_synthetic_cue_tables(tmp_path / "cues", [("train/dia0_utt0", 0), ("train/dia1_utt0", 1)], 7,
                                        no_face=0.0, no_audio=0.0)
    samples = [Sample("train/dia0_utt0", 0, None, "row 1"), Sample("train/dia1_utt0", 1, None, "row 2")]
    clips = ClipVectors({"train/dia0_utt0": {"video": np.ones(5), "speech": np.ones(4)},
                         "train/dia1_utt0": {"video": None, "speech": None}}, {"video": 5, "speech": 4})
    items = build_items(samples, load_cue_tables(folder), {s.segment: np.zeros(3) for s in samples},
                        load_config("meld", []), clips)
    assert list(items[0]["features"]) == ["text", "visual", "audio", "video", "speech"]
    assert items[0]["present"].tolist() == [True] * 5 and items[1]["present"].tolist() == [True] * 3 + [False] * 2
    assert items[1]["features"]["video"].shape == (5,)


def test_meld_experiment_with_clips_logs_their_counts(workdir):
    clips = workdir / "clips"
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("dev", 8)):
        for i in range(count - 1):  # the last utterance of each split has no clip
            write_mp4(clips / split / f"dia{i}_utt0.mp4", coloured(tuple(int(c) for c in rng.integers(0, 255, 3)),
                                                                   count=4), tone(200 + 100 * i, 0.3))
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    summary = main([
        "model.text.random_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, "
        "intermediate_size: 64}", f"mlflow.tracking_uri={tracking}", "tasks=[meld]", "data.meld.dir=null",
        "approaches=[features]", "data.meld.train_size=16", "data.meld.dev_size=8", "trainer.max_epochs=1",
        "model.text.max_length=16", f"data.meld.clips={clips}", f"data.meld.clip_cache={workdir / 'cache'}",
        "model.features.clip_encoder.name=affectlab-tiny", "model.features.clip_encoder.pretrained=null",
        "model.features.clip_encoder.frames=2", "model.features.dim=16", "model.features.heads=2",
    ])
    assert 0.0 <= summary["meld/features/f1_weighted"] <= 1.0
    client = MlflowClient(tracking_uri=tracking)
    (parent,) = [r for r in client.search_runs([client.get_experiment_by_name("meld").experiment_id])
                 if "mlflow.parentRunId" not in r.data.tags]
    assert parent.data.metrics["data/meld_clips_found"] == 22
    assert parent.data.metrics["data/meld_clips_missing"] == 2
    assert len(list((workdir / "cache").rglob("*.npz"))) == 22


@pytest.mark.parametrize("override, message", [
    ("data.on_bad_clip=ignore", r"data.on_bad_clip=ignore: expected one of error \| skip"),
    ("data.cexpr.max_epochs=0", r"data.cexpr.max_epochs=0: expected a whole number >= 1, or null"),
])
def test_a_bad_clip_or_epoch_setting_is_refused_before_any_work(override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(load_config("meld", [override]))
