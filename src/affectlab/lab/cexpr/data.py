"""C-EXPR-DB's data for the zero-shot compound experiment: the videos cut into windows, their frame labels, the
basic-expression sets the fusion trains on, and the modality tables of every window.

The data root holds one folder per data set, in the layout the embedded synthetic set is written in:

    cexpr/annotation/<V>.csv, cexpr/videos/<V>(.mp4|/), cexpr/tables/<modality>.csv    the compound test videos
    affwild2/EXPR/<V>.txt, affwild2/videos/<V>, affwild2/tables/<modality>.csv        basic-expression training
    afew/videos/<Class>/<clip>, afew/tables/<modality>.csv                            basic-expression training

(videos/ of the basic sets is read only for the visual modalities). An AFEW clip is one segment,
window_id("<Class>/<clip>", 0); AffWild2 and C-EXPR-DB videos are cut into windows. Every table row is one 4 s / 2 s
window (`affectlab.datasets.cexpr.window_id`); the fusion reads nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from affectlab.datasets.affwild2 import read_afew, read_affwild2_expression
from affectlab.datasets.cexpr import (
    find_video,
    frame_labels,
    list_cexpr_videos,
    read_cexpr_annotation,
    segment_windows,
    video_info,
    window_id,
)
from affectlab.datasets.labelsets import load_label_set
from affectlab.datasets.modality_tables import align_modality_tables, read_modality_table
from affectlab.datasets.synthetic_cexpr import ensure_synthetic_cexpr
from affectlab.lab.config import ConfigError
from affectlab.models.zero_shot import ZeroShotClip

CEXPR = load_label_set("cexpr")  # the compounds, their pairs of basic classes, and the basic classes (basic8)
BASIC_EMOTIONS, COMPOUND_EXPRESSIONS, PAIRS = CEXPR.basis.classes, CEXPR.compounds, CEXPR.pair_index()
NUM_BASIC = len(BASIC_EMOTIONS)


def zero_shot_clip(clip) -> ZeroShotClip:
    """Zero-shot CLIP (`affectlab.models.clip.create_clip`'s model and tokenizer) matching frames to the basic label
    words and the compounds' words: the zero-shot modality, its direct compound table and PFSA's text prototypes."""
    return ZeroShotClip(clip.model, clip.tokenizer, CEXPR.basis.words, CEXPR.words[:len(COMPOUND_EXPRESSIONS)])


@dataclass
class Segments:
    """Windows with their modality probabilities: probs [N, M, 8] (NaN where missing), present [N, M]."""

    ids: tuple[str, ...]
    probs: np.ndarray
    present: np.ndarray

    def subset(self, modalities: Sequence[int]) -> Segments:
        return Segments(self.ids, self.probs[:, list(modalities)], self.present[:, list(modalities)])


@dataclass
class WindowedVideo:
    """A video cut into windows: `truth` per frame (C-EXPR-DB or AffWild2 index, -1 unannotated)."""

    name: str
    path: Path | None  # the video file or frame folder; None when no frames are needed
    num_frames: int
    windows: np.ndarray  # [S, 2] frame ranges; window k is table row window_id(name, k)
    truth: np.ndarray

    def ids(self) -> list[str]:
        return [window_id(self.name, k) for k in range(len(self.windows))]


def resolve_root(data: DictConfig) -> Path:
    if data.root:
        root = Path(data.root).expanduser()
        lacking = [half for half in ("cexpr", *data.basic_sets) if not (root / half).is_dir()]
        if lacking:
            raise ConfigError(f"data.root={data.root!r} lacks {lacking} (see affectlab.lab.cexpr.data's layout)")
        return root
    return ensure_synthetic_cexpr(**OmegaConf.to_container(data.synthetic))


def _windows(num_frames: int, fps: float, data: DictConfig) -> np.ndarray:
    return segment_windows(num_frames, fps, data.window_s, data.hop_s, data.min_last_s)


def compound_videos(root: Path, data: DictConfig) -> list[WindowedVideo]:
    videos = []
    for video in list_cexpr_videos(root / "cexpr"):
        segments = read_cexpr_annotation(video.annotation, duration_s=video.duration_s)
        truth = frame_labels(segments, video.num_frames, video.fps)
        windows = _windows(video.num_frames, video.fps, data)
        videos.append(WindowedVideo(video.name, video.path, video.num_frames, windows, truth))
    return videos


def affwild2_videos(root: Path, data: DictConfig, need_frames: bool) -> list[WindowedVideo]:
    """AffWild2 label files (and, for the visual modalities, their videos in affwild2/videos/)."""
    files = sorted((root / "affwild2" / "EXPR").glob("*.txt"))
    if not files:
        raise ConfigError(f"{root / 'affwild2' / 'EXPR'}: no AffWild2 expression label files")
    videos = []
    for path in files:
        truth = read_affwild2_expression(path)
        video = find_video(root / "affwild2" / "videos", path.stem, path) if need_frames else None
        videos.append(WindowedVideo(path.stem, video, len(truth), _windows(len(truth), data.basic_fps, data), truth))
    return videos


def afew_videos(root: Path, data: DictConfig, need_frames: bool) -> list[WindowedVideo]:
    """AFEW's clips, each one window over the whole clip labelled with its class folder."""
    videos = []
    for clip in read_afew(root / "afew" / "videos"):
        num_frames, _ = video_info(clip.path)
        name = f"{clip.path.parent.name}/{clip.path.stem}"
        windows = np.array([[0, num_frames]])
        videos.append(WindowedVideo(name, clip.path, num_frames, windows, np.full(num_frames, clip.label)))
    return videos


BASIC_SETS = {"affwild2": affwild2_videos, "afew": afew_videos}


def window_majority(labels: np.ndarray) -> int:
    """The most frequent annotated label of a window's frames, -1 if none is annotated."""
    annotated = labels[labels >= 0]
    return int(np.bincount(annotated).argmax()) if annotated.size else -1


def modality_names(
    root: Path, configured: Sequence[str] | None, computed: Sequence[str], halves: Sequence[str]
) -> list[str]:
    """The configured modalities, or every table found in the tables folders of all `halves` plus those the run
    computes (visual, and text ones from their texts)."""
    folders = [root / half / "tables" for half in halves]
    available = [{p.stem for p in folder.glob("*.csv")} | set(computed) for folder in folders]
    if configured:
        for folder, names in zip(folders, available):
            lacking = [m for m in configured if m not in names]
            if lacking:
                raise ConfigError(f"data.modalities={list(configured)}: no table {lacking} in {folder}")
        return list(configured)
    names = sorted(set.intersection(*available))
    if not names:
        raise ConfigError(f"no modality table in every one of {[str(f) for f in folders]}")
    return names


def load_segments(paths: Sequence[Path], ids: Sequence[str]) -> Segments:
    order, probs, present = align_modality_tables([read_modality_table(path) for path in paths], ids)
    return Segments(order, probs, present)


def table_paths(root: Path, half: str, modalities: Sequence[str], computed: Path | None) -> list[Path]:
    """Where each modality's table for `half` ("cexpr", "affwild2", "afew") is: the run's computed tables (visual
    modalities, and text modalities from their texts, which win over a given table of the same name) or data.root."""
    return [
        computed / half / f"{m}.csv" if computed is not None and (computed / half / f"{m}.csv").is_file()
        else root / half / "tables" / f"{m}.csv"
        for m in modalities
    ]


def basic_training_set(videos: Sequence[WindowedVideo], segments: Segments) -> tuple[Segments, np.ndarray]:
    """The labelled windows (label = the majority frame label) with at least one modality present."""
    labels = np.array([window_majority(v.truth[start:end]) for v in videos for start, end in v.windows])
    keep = (labels >= 0) & segments.present.any(axis=1)
    return Segments(tuple(np.asarray(segments.ids)[keep]), segments.probs[keep], segments.present[keep]), labels[keep]


def split_indices(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices of the basic windows: one seeded shuffle, the first val_fraction held out."""
    order = np.random.default_rng(seed).permutation(count)
    n_val = max(1, int(round(val_fraction * count)))
    return order[n_val:], order[:n_val]
