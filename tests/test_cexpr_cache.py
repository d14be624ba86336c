"""Cached modality tables: written atomically, vouched for by a size + SHA-256 manifest, rebuilt when damaged."""

from __future__ import annotations

import json

import numpy as np

from affectlab.datasets.modality_tables import (
    MANIFEST,
    cached_table_ok,
    ensure_modality_table,
    read_modality_table,
    write_cached_table,
)

IDS = ["a/0000", "a/0001", "a/0002", "b/0000"]


def _probs() -> np.ndarray:
    return np.tile(np.eye(8)[3] * 0.5 + 1 / 16, (len(IDS), 1))


def test_the_manifest_records_size_and_sha256_of_each_table(tmp_path):
    path = write_cached_table(tmp_path / "static_face.csv", IDS, _probs())
    record = json.loads((tmp_path / MANIFEST).read_text())["static_face.csv"]
    assert record["bytes"] == path.stat().st_size and len(record["sha256"]) == 64
    assert cached_table_ok(path)
    assert not cached_table_ok(tmp_path / "absent.csv")


def test_a_table_written_without_the_manifest_is_not_trusted(tmp_path):
    (tmp_path / "audio.csv").write_text("segment_id,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n")
    assert not cached_table_ok(tmp_path / "audio.csv")


def test_a_truncated_table_is_rebuilt_not_read(tmp_path):
    calls = []

    def predict() -> np.ndarray:
        calls.append(1)
        return _probs()

    path = tmp_path / "dynamic_face.csv"
    ensure_modality_table(path, IDS, predict)
    good = path.read_bytes()
    ensure_modality_table(path, IDS, predict)
    assert len(calls) == 1  # intact: read from the cache

    # cut at a line boundary: the file is still a valid table of 2 segments, which only the manifest can tell apart
    path.write_bytes(b"".join(good.splitlines(keepends=True)[:3]))
    assert len(read_modality_table(path).segment_ids) == 2 and not cached_table_ok(path)
    table = ensure_modality_table(path, IDS, predict)
    assert len(calls) == 2 and table.segment_ids == tuple(IDS) and path.read_bytes() == good

    # cut mid-line: the parser would refuse it; the manifest catches it first and the table is rebuilt
    path.write_bytes(good[: len(good) // 2])
    ensure_modality_table(path, IDS, predict)
    assert len(calls) == 3 and cached_table_ok(path)


def test_a_damaged_manifest_means_every_table_is_rebuilt(tmp_path):
    path = write_cached_table(tmp_path / "zero_shot_clip.csv", IDS, _probs())
    (tmp_path / MANIFEST).write_text("{not json")
    assert not cached_table_ok(path)
