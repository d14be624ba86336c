"""Losses for imbalanced emotion classes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def class_balanced_weights(counts: Sequence[int], beta: float = 0.999) -> Tensor:
    """Per-class loss weights from the effective number of samples (Cui et al., "Class-Balanced Loss Based on
    Effective Number of Samples", CVPR 2019): w_c = (1 - beta) / (1 - beta ** n_c), scaled to sum to the number of
    classes. A class with no samples gets the weight of a class with one."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"class_balanced_weights beta={beta}; expected 0 <= beta < 1")
    n = torch.as_tensor(list(counts), dtype=torch.float64).clamp(min=1)
    weights = (1.0 - beta) / (1.0 - beta ** n)
    return (weights * len(weights) / weights.sum()).float()
