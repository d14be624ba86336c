"""MELD's video clips, when the user has them: where each utterance's `dia{D}_utt{U}.mp4` is, and the two feature
vectors the feature-based model reads from it.

- video: a frozen CLIP image encoder (open_clip, `create_clip`) on `frames` frames spread evenly over the clip
  (resized on the short side, centre-cropped, normalised as the encoder expects), L2-normalised per frame and
  averaged;
- speech: `affectlab.models.audio.log_mel_statistics` of the clip's sound track (16 kHz mono, read with decord).

A clip that is absent, or a file without a sound track, leaves that modality missing for the utterance (the attention
fusion masks it), counted and warned about once. A file that cannot be read is an error naming it, or with
``on_bad_clip=skip`` a missing modality counted like the others. The vectors are computed once per clip and kept
under ``cache_dir/<key>/`` (`keyed_folder` of the encoder, its weights, frame count, sample rate, mel bands), one `.npz` per clip
written atomically with the clip's size and modification time; a clip that changed is computed again.

Layouts found (``folder`` = ``data.meld.clips``): ``<folder>/<split>/dia{D}_utt{U}.mp4`` and MELD.Raw's own
``<folder>/train_splits/``, ``<folder>/dev_splits_complete/``, ``<folder>/output_repeated_splits_test/``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.integrity import keyed_folder, write_atomic
from affectlab.datasets.video import VIDEO_SUFFIXES, read_audio, read_spread
from affectlab.models.audio import log_mel_statistics
from affectlab.models.clip import create_clip

SPLIT_FOLDERS = {"train": ("train", "train_splits"), "dev": ("dev", "dev_splits_complete"),
                 "test": ("test", "output_repeated_splits_test")}
CLIP_MODALITIES = ("video", "speech")


def find_clip(folder: Path, segment: str) -> Path | None:
    """The clip of a MELD segment ``<split>/dia{D}_utt{U}`` under ``folder``, or None when there is none."""
    split, name = segment.split("/", 1)
    for sub in SPLIT_FOLDERS.get(split, (split,)):
        for suffix in VIDEO_SUFFIXES:
            path = folder / sub / f"{name}{suffix}"
            if path.is_file():
                return path
    return None


@dataclass
class ClipCounts:
    """What happened to the clips of one run (logged to MLflow as ``data/meld_clips_<name>``)."""

    found: int = 0
    missing: int = 0  # no file for the utterance
    silent: int = 0  # a file without a sound track
    skipped: int = 0  # unreadable, skipped (on_bad_clip=skip)
    skipped_files: list[str] = field(default_factory=list)

    def as_metrics(self) -> dict[str, float]:
        return {f"data/meld_clips_{k}": float(v) for k, v in vars(self).items() if isinstance(v, int)}


class ClipEncoder:
    """The frozen encoders that turn one clip into {"video": [D] | None, "speech": [2 * n_mels] | None}."""

    def __init__(self, name: str = "ViT-B-32", pretrained: str | None = "openai", frames: int = 8,
                 sample_rate: int = 16000, n_mels: int = 40):
        if frames < 1:
            raise ValueError(f"frames={frames}: expected at least one frame per clip")
        self.clip = create_clip(name, pretrained)
        self.clip.model.eval().requires_grad_(False)
        self.frames, self.sample_rate, self.n_mels = frames, sample_rate, n_mels
        self.key = {"name": name, "pretrained": str(pretrained), "frames": frames, "sample_rate": sample_rate,
                    "n_mels": n_mels, "image_size": self.clip.image_size, "weights": self._weights_digest()}

    def _weights_digest(self) -> str:
        """A digest of the image encoder's weights (random weights differ per seed and must not share a cache)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.clip.model.visual.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().contiguous().numpy().tobytes())
        return digest.hexdigest()

    @property
    def sizes(self) -> dict[str, int]:
        return {"video": int(self.clip.model.visual.output_dim), "speech": 2 * self.n_mels}

    def _pixels(self, frame: np.ndarray) -> torch.Tensor:
        image = torch.from_numpy(frame).permute(2, 0, 1).float().div_(255).unsqueeze(0)  # [1, 3, H, W]
        size = self.clip.image_size
        height, width = image.shape[-2:]
        scale = size / min(height, width)
        image = F.interpolate(image, size=(max(size, round(height * scale)), max(size, round(width * scale))),
                              mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
        top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
        image = image[..., top:top + size, left:left + size]
        mean = torch.tensor(self.clip.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.clip.std).view(1, 3, 1, 1)
        return (image - mean) / std

    @torch.no_grad()
    def __call__(self, path: Path) -> dict[str, np.ndarray | None]:
        pixels = torch.cat([self._pixels(frame) for frame in read_spread(path, self.frames)])
        embeddings = F.normalize(self.clip.model.encode_image(pixels).float(), dim=-1)
        waveform = read_audio(path, self.sample_rate)
        speech = None if waveform is None else log_mel_statistics(torch.from_numpy(waveform), self.sample_rate,
                                                                   self.n_mels).numpy()
        return {"video": embeddings.mean(dim=0).numpy(), "speech": speech}


def _cached(path: Path, clip: Path) -> dict[str, np.ndarray | None] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            stat = clip.stat()
            if int(stored["size"]) != stat.st_size or int(stored["mtime_ns"]) != stat.st_mtime_ns:
                return None
            return {m: (stored[m] if m in stored.files else None) for m in CLIP_MODALITIES}
    except (OSError, ValueError, KeyError):  # a damaged file is computed again
        return None


def clip_features(samples: Sequence, folder: Path, encoder: ClipEncoder, cache_dir: Path,
                  on_bad_clip: str = "error") -> tuple[dict[str, dict[str, np.ndarray | None]], ClipCounts]:
    """{segment: {"video": vector | None, "speech": vector | None}} for every sample's segment, and the counts."""
    if on_bad_clip not in ("error", "skip"):
        raise ValueError(f"on_bad_clip={on_bad_clip!r}: expected error or skip")
    if not folder.is_dir():
        raise DatasetError(f"{folder}: the MELD clip folder does not exist (data.meld.clips)")
    counts = ClipCounts()
    features: dict[str, dict[str, np.ndarray | None]] = {}
    segments = sorted({s.segment for s in samples})
    cache = keyed_folder(cache_dir, encoder.key)
    for segment in track(segments, description=f"MELD clips ({len(segments)})", transient=True):
        clip = find_clip(folder, segment)
        if clip is None:
            counts.missing += 1
            features[segment] = dict.fromkeys(CLIP_MODALITIES)
            continue
        stored = cache / f"{segment}.npz"
        vectors = _cached(stored, clip)
        if vectors is None:
            try:
                vectors = encoder(clip)
            except DatasetError:
                if on_bad_clip == "error":
                    raise
                counts.skipped += 1
                counts.skipped_files.append(str(clip))
                features[segment] = dict.fromkeys(CLIP_MODALITIES)
                continue
            stat = clip.stat()
            arrays = {m: v for m, v in vectors.items() if v is not None}

            def write(scratch: Path, arrays=arrays, stat=stat) -> None:
                with scratch.open("wb") as handle:
                    np.savez(handle, size=stat.st_size, mtime_ns=stat.st_mtime_ns, **arrays)

            write_atomic(stored, write)
        counts.found += 1
        counts.silent += vectors["speech"] is None
        features[segment] = vectors
    return features, counts
