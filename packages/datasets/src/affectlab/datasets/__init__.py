"""affectlab.datasets: emotion-recognition datasets as plain PyTorch datasets (no Lightning).

RAER in its release layout (`RaerDataset`, `read_annotation`, `load_raer_split`), TSN frame sampling, a stratified
validation split, label sets as YAML data (`load_label_set`), and the embedded synthetic RAER (`ensure_synthetic_raer`).
"""

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.labelsets import LabelSet, bundled_label_sets, load_label_set
from affectlab.datasets.raer import (
    RAER_CLASSES,
    RaerClip,
    RaerDataset,
    load_raer_split,
    read_annotation,
    stratified_split,
    tsn_indices,
)
from affectlab.datasets.synthetic_raer import ensure_synthetic_raer, make_synthetic_raer

__all__ = [
    "DatasetError",
    "LabelSet",
    "RAER_CLASSES",
    "RaerClip",
    "RaerDataset",
    "bundled_label_sets",
    "ensure_synthetic_raer",
    "load_label_set",
    "load_raer_split",
    "make_synthetic_raer",
    "read_annotation",
    "stratified_split",
    "tsn_indices",
]
