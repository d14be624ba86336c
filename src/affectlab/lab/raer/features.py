"""Frozen-encoder feature cache: the image encoder's per-frame embeddings of RAER's face and context crops, on disk.

With a frozen CLIP image encoder (``model.freeze_image_encoder=true``) every epoch would push the same frames through
the same encoder again. Here each clip's frames are embedded once and stored; training then reads [T, D] embeddings
instead of [T, 3, S, S] frames and runs only the temporal transformers, the projection and the prompts.

What is cached: the embeddings of EVERY frame of a clip, not of the frames one epoch samples. Training draws one
random frame per TSN segment each epoch (RaerDataset, torch's global RNG); `FrameFeatures` draws the same indices
with the same call, so a seeded run samples the same frames with or without the cache (in one process; the RAER
datamodule reads cached clips without loader workers, so this holds against an uncached run with
``data.num_workers=0``), and the cache serves any epoch, evaluation's segment centres and any
``data.num_segments``. The price is one encoder pass over all frames (frames / segments times one epoch's encoder
work, 2x for the synthetic default) before the first epoch.

Layout: ``<folder>/<key>/`` where key is a digest of what the embeddings depend on (the encoder's weights, the input
size, face margin, boxes and normalisation; spelled out in ``key.json``); in it ``<clip_dir>/<stream>.npy`` (float32
[N, D], N = the clip's frames) and ``<clip_dir>/<stream>.json`` (its size and SHA-256, the clip's frame count and
source size). Training reads ``packed/<digest>-<stream>.npy`` (+ ``.json``, its record): a dataset's clips one after
the other, [frames of all clips, D], memory-mapped, the digest naming its clips and their files' SHA-256. Files are
written with `write_atomic`; one whose record does not match (damaged, truncated, stale) is recomputed, never read.
Embeddings are computed in float32 in eval mode whatever the run's precision.
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
from affectlab.datasets.integrity import cache_key, file_record, inside, keyed_folder, matches, write_atomic
from affectlab.datasets.raer import normalise_pixels, tsn_indices

def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict: every entry's name, dtype, shape and bytes, in order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def feature_key(encoder: nn.Module, dataset: RaerDataset) -> dict:
    """What the embeddings of `dataset`'s frames depend on; its digest names the cache folder."""
    crops = dataset.cache_key()
    return {"encoder": weights_digest(encoder), "image_size": crops["image_size"], "face_margin": crops["face_margin"],
            "boxes": crops["boxes"], "mean": list(dataset.mean), "std": list(dataset.std)}


def frame_features(dataset: RaerDataset, encoder: nn.Module, folder: str | Path, streams: Sequence[str], *,
                   device: torch.device | str | None = None, chunk: int = 64) -> FrameFeatures:
    """`dataset` as cached embeddings of `streams`, computing (on `device`, `chunk` frames at a time) every clip
    whose files are missing or do not match their records."""
    root = keyed_folder(folder, feature_key(encoder, dataset))
    features = FrameFeatures(dataset, root, streams)
    stale = [(index, [s for s in streams if not features.is_cached(index, s)]) for index in range(len(dataset))]
    stale = [(index, missing) for index, missing in stale if missing]
    if stale:
        _compute(dataset, encoder, features, stale, device, chunk)
    features.built = sum(len(missing) for _, missing in stale)
    features.pack()
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
    "index"}`` for each of `streams`, the T frames drawn exactly as the dataset draws them (`tsn_indices`).

    Reads go to one memory-mapped [frames of all clips, D] array per stream (`pack`), so fetching a clip is one
    row gather, with no file opened per clip; the per-clip files stay the unit that is built, checked and rebuilt.
    """

    def __init__(self, dataset: RaerDataset, root: Path, streams: Sequence[str]):
        self.root, self.streams = Path(root), tuple(streams)
        self.num_segments, self.train, self.num_classes = dataset.num_segments, dataset.train, dataset.num_classes
        self._clips = dataset.clips
        self._frame_counts = dataset.frame_counts  # what a frame index may be; the crops' count
        # A clip's embeddings are stale when its frames changed: its frame count or the bytes of its source.
        self._sources = [_source_bytes(source) for source in dataset.sources]
        self._offsets = np.cumsum([0, *self._frame_counts[:-1]]).tolist()  # each clip's first row in the pack
        self._labels = torch.tensor(self.labels, dtype=torch.long)
        self._soft_labels = torch.from_numpy(np.stack([clip.soft_label(self.num_classes) for clip in self._clips])
                                             if self._clips else np.zeros((0, self.num_classes), np.float32))
        self._scenes = torch.tensor(dataset.scenes, dtype=torch.long)
        self._digests: dict[tuple[int, str], str] = {}  # (clip, stream) -> SHA-256 of its checked embeddings file
        self._packs: dict[str, Path] = {}  # stream -> its packed array (pack)
        self._arrays: dict[str, torch.Tensor] = {}  # stream -> the packed array, memory-mapped on first read
        self.built = 0  # clip streams computed by the last frame_features call (the rest were read from the cache)

    def _paths(self, index: int, stream: str) -> tuple[Path, Path]:
        clip = self._clips[index]
        folder = inside(self.root, clip.clip_dir, clip.source)
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
        if {k: record.get(k) for k in expected} != expected or not matches(array, record.get("file")):
            return False
        self._digests[index, stream] = record["file"]["sha256"]
        return True

    def store(self, index: int, stream: str, embedded: np.ndarray) -> None:
        """Write one clip's [N, D] embeddings, then their record (a file without a valid record is never read)."""
        array, record_path = self._paths(index, stream)

        def save(path: Path) -> None:
            with path.open("wb") as handle:
                np.save(handle, np.ascontiguousarray(embedded, dtype=np.float32))

        write_atomic(array, save)
        record = {**self._record(index), "file": file_record(array)}
        write_atomic(record_path, lambda path: path.write_text(json.dumps(record), encoding="utf-8"))
        self._digests[index, stream] = record["file"]["sha256"]

    def pack(self) -> None:
        """Concatenate every clip's checked embeddings of each stream into ``packed/<digest>-<stream>.npy``, clip
        after clip; the digest names the clips and their files' SHA-256, so a pack never outlives what it holds.
        A pack is written once and, like every file here, read only while it matches its record."""
        self._arrays = {}
        if not self._clips:
            return
        for stream in self.streams:
            ordered = [[clip.clip_dir, self._digests[index, stream]] for index, clip in enumerate(self._clips)]
            name = cache_key({"clips": ordered})
            path = self.root / "packed" / f"{name}-{stream}.npy"
            record_path = path.with_suffix(".json")
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                record = None
            if not matches(path, record):
                write_atomic(path, lambda scratch: self._write_pack(scratch, stream))
                write_atomic(record_path, lambda scratch: scratch.write_text(json.dumps(file_record(path)),
                                                                             encoding="utf-8"))
            self._packs[stream] = path

    def _write_pack(self, path: Path, stream: str) -> None:
        parts = [np.load(self._paths(index, stream)[0], mmap_mode="r") for index in range(len(self))]
        width = parts[0].shape[1] if parts else 0
        packed = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(sum(self._frame_counts), width))
        for start, part in zip(self._offsets, parts):
            packed[start:start + len(part)] = part
        packed.flush()
        del packed

    def _array(self, stream: str) -> torch.Tensor:
        if stream not in self._arrays:  # each process (loader worker) maps the file itself
            # copy-on-write mapping: writable as torch wants, the pages shared with the file, the file never written
            self._arrays[stream] = torch.from_numpy(np.load(self._packs[stream], mmap_mode="c"))
        return self._arrays[stream]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}  # a spawned worker maps the packs again instead of copying them

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
        return self._scenes.tolist()

    def __getitem__(self, index: int) -> dict:
        frames = tsn_indices(self._frame_counts[index], self.num_segments, self.train)
        rows = torch.tensor(frames) + self._offsets[index]
        return {
            **{stream: self._array(stream)[rows] for stream in self.streams},
            "label": self._labels[index],
            "soft_label": self._soft_labels[index],
            "scene": self._scenes[index],
            "index": index,
        }


def _source_bytes(source: Path) -> int:
    """Bytes of a clip's source: its video file, or the sum over its frame folder's files."""
    if source.is_dir():
        return sum(path.stat().st_size for path in source.iterdir() if path.is_file())
    return source.stat().st_size
