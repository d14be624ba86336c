"""affectlab.datasets: emotion-recognition datasets as plain PyTorch datasets (no Lightning).

RAER in its release layout (`RaerDataset`, `read_annotation`, `load_raer_split`; frame folders or video files read
with PyAV or decord), TSN frame sampling, a stratified validation split, recording contexts (`clip_context`), annotator votes
(`majority_label`, `soft_label`, `fleiss_kappa`), label sets as YAML data (`load_label_set`: raer_five, raer_four),
and the embedded synthetic RAER (`ensure_synthetic_raer`).
"""

from affectlab.datasets.errors import DatasetError, DatasetWarning
from affectlab.datasets.labelsets import LabelSet, bundled_label_sets, load_label_set
from affectlab.datasets.raer import (
    RAER_CLASSES,
    RAER_CONTEXTS,
    RaerClip,
    RaerDataset,
    clip_context,
    load_raer_split,
    read_annotation,
    stratified_split,
    tsn_indices,
    write_crop_cache,
)
from affectlab.datasets.synthetic_raer import ensure_synthetic_raer, make_synthetic_raer
from affectlab.datasets.video import (
    VIDEO_SUFFIXES,
    probe_video,
    read_audio,
    read_frames,
    read_images,
    videos_of,
    write_mjpeg_avi,
)
from affectlab.datasets.votes import fleiss_kappa, majority_label, soft_label

__all__ = [
    "DatasetError",
    "DatasetWarning",
    "LabelSet",
    "RAER_CLASSES",
    "RAER_CONTEXTS",
    "RaerClip",
    "RaerDataset",
    "VIDEO_SUFFIXES",
    "bundled_label_sets",
    "clip_context",
    "ensure_synthetic_raer",
    "fleiss_kappa",
    "load_label_set",
    "load_raer_split",
    "majority_label",
    "make_synthetic_raer",
    "probe_video",
    "read_frames",
    "read_images",
    "read_annotation",
    "soft_label",
    "stratified_split",
    "tsn_indices",
    "write_crop_cache",
    "read_audio",
    "videos_of",
    "write_mjpeg_avi",
]
