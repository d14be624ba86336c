"""Frozen-encoder feature cache: the image encoder's per-frame embeddings of RAER's face and context crops, on disk.

With a frozen CLIP image encoder (``model.freeze_image_encoder=true``) every epoch would push the same frames through
the same encoder again. Here each clip's frames are embedded once and stored; training then reads [T, D] embeddings
instead of [T, 3, S, S] frames and runs only the temporal transformers, the projection and the prompts.

What is cached: the embeddings of EVERY frame of a clip, not of the frames one epoch samples. Training draws one
random frame per TSN segment each epoch (RaerDataset, torch's global RNG); `FrameFeatures` draws the same indices
with the same call, so a seeded run samples the same frames with or without the cache, and the cache serves any
epoch, evaluation's segment centres and any ``data.num_segments``. The price is one encoder pass over all frames
(frames / segments times one epoch's encoder work, 2x for the synthetic default) before the first epoch.

Layout: ``<folder>/<key>/`` where key is a digest of what the embeddings depend on (the encoder's weights, the input
size, face margin, boxes and normalisation; spelled out in ``key.json``); in it ``<clip_dir>/<stream>.npy`` (float32
[N, D], N = the clip's frames) and ``<clip_dir>/<stream>.json`` (its size and SHA-256, the clip's frame count and
source size). Files are written with `write_atomic`; one whose record does not match (damaged, truncated, stale) is
recomputed, never read. Embeddings are computed in float32 in eval mode whatever the run's precision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from affectlab.datasets import RaerDataset
from affectlab.datasets.integrity import file_record, matches, write_atomic
from affectlab.datasets.raer import normalise_pixels, tsn_indices

KEY_FILE = "key.json"


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict: every entry's name, dtype, shape and bytes, in order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(encoder: nn.Module, dataset: RaerDataset) -> dict:
    """What the embeddings of `dataset`'s frames depend on; its digest names the cache folder."""
    crops = dataset.cache_key()
    return {"encoder": weights_digest(encoder), "image_size": crops["image_size"], "face_margin": crops["face_margin"],
            "boxes": crops["boxes"], "mean": list(dataset.mean), "std": list(dataset.std)}


def frame_features(dataset: RaerDataset, encoder: nn.Module, folder: str | Path, streams: Sequence[str], *,
                   device: torch.device | str | None = None, chunk: int = 64) -> FrameFeatures:
    """`dataset` as cached embeddings of `streams`, computing (on `device`, `chunk` frames at a time) every clip
    whose files are missing or do not match their records."""
    key = cache_key(encoder, dataset)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = Path(folder) / name
    if not (root / KEY_FILE).is_file():
        write_atomic(root / KEY_FILE, lambda path: path.write_text(json.dumps(key, indent=1), encoding="utf-8"))
    features = FrameFeatures(dataset, root, streams)
    stale = [(index, [s for s in streams if not features.is_cached(index, s)]) for index in range(len(dataset))]
    stale = [(index, missing) for index, missing in stale if missing]
    if stale:
        _compute(dataset, encoder, features, stale, device, chunk)
    features.built = sum(len(missing) for _, missing in stale)
    return features


def _compute(dataset: RaerDataset, encoder: nn.Module, features: FrameFeatures,
             stale: list[tuple[int, list[str]]], device, chunk: int) -> None:
    home = next(encoder.parameters()).device
    device = torch.device(device) if device is not None else home
    training = encoder.training
    encoder.to(device).eval()
    try:
        for index, missing in stale:
            crops = dict(zip(("face", "context"), dataset.all_crops(index)))
            for stream in missing:
                pixels = torch.from_numpy(crops[stream])
                with torch.inference_mode():
                    embedded = torch.cat([
                        encoder(normalise_pixels(pixels[start:start + chunk].to(device), dataset.mean, dataset.std))
                        for start in range(0, len(pixels), chunk)
                    ]).float().cpu().numpy()
                features.store(index, stream, embedded)
    finally:
        encoder.to(home).train(training)


class FrameFeatures(Dataset):
    """A RaerDataset's clips as cached embeddings: ``{stream: [T, D] float32, "label", "soft_label", "scene",
    "index"}`` for each of `streams`, the T frames drawn exactly as the dataset draws them (`tsn_indices`)."""

    def __init__(self, dataset: RaerDataset, root: Path, streams: Sequence[str]):
        self.dataset, self.root, self.streams = dataset, Path(root), tuple(streams)
        self.num_segments, self.train = dataset.num_segments, dataset.train
        self._clips = dataset.clips
        self._scenes = dataset.scenes
        self._frame_counts = list(dataset._frame_counts)  # what a frame index may be; the crops' count
        # A clip's embeddings are stale when its frames changed: its frame count or the bytes of its source.
        self._sources = [_source_bytes(Path(source)) for source in dataset._sources]
        self.built = 0  # clip streams computed by the last frame_features call (the rest were read from the cache)

    def _paths(self, index: int, stream: str) -> tuple[Path, Path]:
        folder = self.root / self._clips[index].clip_dir
        return folder / f"{stream}.npy", folder / f"{stream}.json"

    def _record(self, index: int) -> dict:
        return {"frames": self._frame_counts[index], "source_bytes": self._sources[index]}

    def is_cached(self, index: int, stream: str) -> bool:
        """True when the clip's embeddings file matches its record (size, SHA-256) and the record its frames."""
        array, record_path = self._paths(index, stream)
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        expected = self._record(index)
        return {k: record.get(k) for k in expected} == expected and matches(array, record.get("file"))

    def store(self, index: int, stream: str, embedded: np.ndarray) -> None:
        """Write one clip's [N, D] embeddings, then their record (a file without a valid record is never read)."""
        array, record_path = self._paths(index, stream)

        def save(path: Path) -> None:
            with path.open("wb") as handle:
                np.save(handle, np.ascontiguousarray(embedded, dtype=np.float32))

        write_atomic(array, save)
        record = {**self._record(index), "file": file_record(array)}
        write_atomic(record_path, lambda path: path.write_text(json.dumps(record), encoding="utf-8"))

    def __len__(self) -> int:
        return len(self._clips)

    @property
    def clips(self):
        return list(self._clips)

    @property
    def labels(self) -> list[int]:
        return [clip.label for clip in self._clips]

    @property
    def scenes(self) -> list[int]:
        return list(self._scenes)

    def __getitem__(self, index: int) -> dict:
        frames = tsn_indices(self._frame_counts[index], self.num_segments, self.train)
        item = {stream: torch.from_numpy(np.load(self._paths(index, stream)[0], mmap_mode="r")[frames])
                for stream in self.streams}
        clip = self._clips[index]
        return {
            **item,
            "label": torch.tensor(clip.label, dtype=torch.long),
            "soft_label": torch.from_numpy(clip.soft_label(self.dataset.num_classes)),
            "scene": torch.tensor(self._scenes[index], dtype=torch.long),
            "index": index,
        }


def _source_bytes(source: Path) -> int:
    """Bytes of a clip's source: its video file, or the sum over its frame folder's files."""
    if source.is_dir():
        return sum(path.stat().st_size for path in source.iterdir() if path.is_file())
    return source.stat().st_size
