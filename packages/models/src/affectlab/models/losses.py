"""Classification losses by name (`LOSSES`, `create_loss`), and class weights for imbalanced emotion classes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affectlab.models.errors import ModelError


def class_balanced_weights(counts: Sequence[int], beta: float = 0.999) -> Tensor:
    """Per-class loss weights from the effective number of samples (Cui et al., "Class-Balanced Loss Based on
    Effective Number of Samples", CVPR 2019): w_c = (1 - beta) / (1 - beta ** n_c), scaled to sum to the number of
    classes. A class with no samples gets the weight of a class with one."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"class_balanced_weights beta={beta}; expected 0 <= beta < 1")
    n = torch.as_tensor(list(counts), dtype=torch.float64).clamp(min=1)
    weights = (1.0 - beta) / (1.0 - beta ** n)
    return (weights * len(weights) / weights.sum()).float()


class CrossEntropy(nn.Module):
    """Cross-entropy on the majority label (CLIP-CAER's loss). Every loss of `LOSSES` takes the same options; this one
    uses none of them (the class counts and beta are for class balancing, label smoothing is `cb_ls`'s)."""

    target = "label"

    def __init__(self, class_counts: Sequence[int] | None = None, beta: float = 0.999, label_smoothing: float = 0.0):
        super().__init__()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, target)


class SoftCrossEntropy(CrossEntropy):
    """Cross-entropy on the annotators' vote shares (a soft label per clip)."""

    target = "soft_label"


class ClassBalancedSmoothing(nn.Module):
    """Cross-entropy with class-balanced weights (`class_balanced_weights` of the training counts) and label
    smoothing: for classes as imbalanced as RAER's."""

    target = "label"

    def __init__(self, class_counts: Sequence[int] | None = None, beta: float = 0.999, label_smoothing: float = 0.0):
        super().__init__()
        if class_counts is None:
            raise ValueError("the cb_ls loss needs the training split's class counts")
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weights", class_balanced_weights(class_counts, beta), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, target, weight=self.weights, label_smoothing=self.label_smoothing)


# The classification losses by the name a config gives (model.loss); each reads batch[loss.target].
LOSSES: dict[str, type[nn.Module]] = {"ce": CrossEntropy, "soft_ce": SoftCrossEntropy, "cb_ls": ClassBalancedSmoothing}


def create_loss(name: str, **options) -> nn.Module:
    """The loss `name` of `LOSSES`, built with `options` (class_counts, beta, label_smoothing)."""
    if name not in LOSSES:
        raise ModelError(f"loss {name!r}; expected one of {', '.join(LOSSES)}")
    return LOSSES[name](**options)
