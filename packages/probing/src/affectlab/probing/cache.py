"""Extracted features on disk: one folder per (model, revision, layers, pooling, input format, texts), in shards.

Layout of a cache folder::

    manifest.json          what the features are: the key below, hidden size, shard size, shard count; once every
                           shard is complete, also every shard's record
    shards/00003.safetensors   features [layers, rows, hidden] of texts start..stop
    shards/00003.json      the shard's record: start, stop, bytes, sha256 — written after the shard itself

A shard counts only when its record exists and its file has the recorded size and checksum. Every file is written to
a temporary name and moved into place with ``os.replace``, so an interrupted run leaves either nothing or a complete
shard, and the next run extracts only the shards still missing. While extraction runs, each shard's record lives
beside it, so that ranks extracting different shards never write the same file; the first complete load copies them
all into the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from affectlab.datasets.integrity import file_record, matches, write_atomic
from affectlab.probing.extract import HiddenStateExtractor

MANIFEST_VERSION = 1


class CacheMismatchError(ValueError):
    """A cache folder holds features of something else than what was asked for."""


class IncompleteCacheError(RuntimeError):
    """Shards are missing (another rank has not finished, or a run was interrupted)."""


def default_cache_root() -> Path:
    return Path(os.environ.get("AFFECTLAB_CACHE", "~/.cache/affectlab")).expanduser() / "features"


def texts_hash(texts: Sequence[str]) -> str:
    """SHA-256 of the texts in order (length-prefixed, so that no two lists share a hash by concatenation)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything the features depend on; two runs with equal keys share a cache."""

    model: str
    revision: str
    layers: tuple[int, ...]
    pooling: str
    input_format: str
    max_length: int
    texts_sha256: str
    num_texts: int

    @classmethod
    def of(cls, extractor: HiddenStateExtractor, model: str, revision: str, texts: Sequence[str]) -> "CacheKey":
        return cls(
            model=model,
            revision=revision,
            layers=tuple(extractor.layers),
            pooling=extractor.pooling,
            input_format=extractor.input_format,
            max_length=extractor.max_length,
            texts_sha256=texts_hash(texts),
            num_texts=len(texts),
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def folder_name(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model.strip("/"))[-60:]
        return f"{slug}-{self.digest()}"


class FeatureCache:
    """The shards of one key in ``folder``; `open` checks (or writes) the manifest."""

    def __init__(self, folder: Path, key: CacheKey, *, hidden_size: int, shard_size: int = 2048):
        self.folder, self.key = Path(folder), key
        self.hidden_size, self.shard_size = hidden_size, shard_size
        self.num_shards = max(1, -(-key.num_texts // shard_size))
        self._verified: set[int] = set()  # shards whose checksum this object has already checked

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    def manifest(self) -> dict:
        return {
            "version": MANIFEST_VERSION,
            "key": self.key.as_dict(),
            "hidden_size": self.hidden_size,
            "shard_size": self.shard_size,
            "num_shards": self.num_shards,
            "dtype": "float32",
        }

    def open(self) -> "FeatureCache":
        """Creates the folder and manifest, or checks that an existing manifest describes the same features."""
        (self.folder / "shards").mkdir(parents=True, exist_ok=True)
        expected = self.manifest()
        if self.manifest_path.exists():
            try:
                found = json.loads(self.manifest_path.read_text())
            except json.JSONDecodeError as error:
                raise CacheMismatchError(f"{self.manifest_path}: not JSON ({error}); delete the folder") from error
            found.pop("shards", None)  # the records of a complete cache: checked shard by shard, not here
            differences = _differences(found, expected)
            if differences:
                raise CacheMismatchError(
                    f"{self.manifest_path} describes other features: "
                    + "; ".join(f"{name} is {have!r}, expected {want!r}" for name, have, want in differences)
                    + ". Use another cache folder or delete this one."
                )
        else:
            write_atomic(self.manifest_path, lambda p: p.write_text(json.dumps(expected, indent=2)))
        return self

    def rows(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.key.num_texts))

    def _paths(self, shard: int) -> tuple[Path, Path]:
        stem = self.folder / "shards" / f"{shard:05d}"
        return stem.with_suffix(".safetensors"), stem.with_suffix(".json")

    def record(self, shard: int) -> dict | None:
        path = self._paths(shard)[1]
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_complete(self, shard: int) -> bool:
        """The shard's file exists with its record's size and SHA-256 (checked once per shard and object)."""
        if shard in self._verified:
            return True
        data, expected = self._paths(shard)[0], self.record(shard)
        complete = matches(data, expected)
        if complete:
            self._verified.add(shard)
        return complete

    def missing(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """This rank's shards (every ``world_size``-th, from ``rank``) that are not complete yet."""
        return [s for s in range(rank, self.num_shards, world_size) if not self.is_complete(s)]

    def write(self, shard: int, features: torch.Tensor) -> None:
        rows = self.rows(shard)
        expected = (len(self.key.layers), len(rows), self.hidden_size)
        if tuple(features.shape) != expected:
            raise ValueError(f"shard {shard}: features of shape {tuple(features.shape)}, expected {expected}")
        data, record = self._paths(shard)
        write_atomic(data, lambda p: save_file({"features": features.float().contiguous()}, str(p)))
        entry = {"start": rows.start, "stop": rows.stop, **file_record(data)}
        write_atomic(record, lambda p: p.write_text(json.dumps(entry)))
        self._verified.add(shard)

    def load(self) -> torch.Tensor:
        """All features ``[layers, num_texts, hidden]``; `IncompleteCacheError` if a shard is missing or damaged."""
        broken = [s for s in range(self.num_shards) if not self.is_complete(s)]
        if broken:
            raise IncompleteCacheError(
                f"{self.folder}: shard(s) {broken[:10]}{'…' if len(broken) > 10 else ''} of {self.num_shards} are "
                "missing or damaged; run the extraction (every rank) again to complete them"
            )
        manifest = json.loads(self.manifest_path.read_text())
        records = [self.record(s) for s in range(self.num_shards)]
        if manifest.get("shards") != records:  # ranks write the same records: whichever replaces last, it is right
            manifest["shards"] = records
            write_atomic(self.manifest_path, lambda p: p.write_text(json.dumps(manifest, indent=2)))
        return torch.cat([load_file(str(self._paths(s)[0]))["features"] for s in range(self.num_shards)], dim=1)


def _differences(found: dict, expected: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    out = []
    for name in sorted(set(found) | set(expected)):
        have, want = found.get(name), expected.get(name)
        if isinstance(have, dict) and isinstance(want, dict):
            out.extend(_differences(have, want, f"{prefix}{name}."))
        elif have != want:
            out.append((f"{prefix}{name}", have, want))
    return out


def cached_features(
    extractor: HiddenStateExtractor,
    texts: Sequence[str],
    *,
    model: str,
    revision: str = "local",
    root: Path | None = None,
    folder: Path | None = None,
    shard_size: int = 2048,
    rank: int = 0,
    world_size: int = 1,
    progress=None,
) -> tuple[torch.Tensor | None, FeatureCache, int]:
    """``(features, cache, shards extracted by this call)``: extracts this rank's missing shards, then loads all.

    ``folder`` defaults to ``root / <model>-<key digest>-shards<shard_size>`` (``root``: ``$AFFECTLAB_CACHE/features``).
    With several ranks, each extracts its own shards; the features come back as None on a rank that finds other
    ranks' shards still missing (call again after a barrier).
    """
    key = CacheKey.of(extractor, model, revision, texts)
    folder = folder or (root or default_cache_root()) / f"{key.folder_name()}-shards{shard_size}"
    cache = FeatureCache(folder, key, hidden_size=extractor.model.config.hidden_size, shard_size=shard_size).open()
    todo = cache.missing(rank, world_size)
    for shard in todo:
        rows = cache.rows(shard)
        cache.write(shard, extractor(texts[rows.start : rows.stop]))
        if progress is not None:
            progress(shard, cache.num_shards)
    try:
        return cache.load(), cache, len(todo)
    except IncompleteCacheError:
        if world_size == 1:
            raise
        return None, cache, len(todo)
