"""Emotion directions: per layer, each emotion's difference of means in the cached hidden states; a classifier that
only projects on them; and a text's per-token emotion trajectory.

The direction of class c at a layer is the mean hidden state of its texts minus the mean of the other classes' means
(each class weighing the same, whatever its size): on a natural distribution the reference is then not pulled
towards the majority class (MELD's neutral is half the texts), and duplicating texts of a class, as balanced
training sets do, leaves every direction unchanged. It equals C/(C-1) times the class mean minus the mean of the
class means. These are the vectors added to a layer's output to steer a model (`affectlab.probing.steering`), as
in activation addition (Turner et al. 2023) and the mean-difference steering of Rimsky et al. (ACL 2024).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from affectlab.probing.extract import HiddenStateExtractor
from affectlab.probing.probes import layer_losses


class DirectionsError(ValueError):
    """Features or labels from which directions cannot be computed; the message names the class or the shape."""


def _memberships(labels: torch.Tensor, count: int, num_classes: int) -> torch.Tensor:
    """``[N, C]`` 0/1 membership of every example in every class, from class indices ``[N]`` or multi-hot ``[N, C]``."""
    labels = torch.as_tensor(labels)
    if labels.shape[0] != count:
        raise DirectionsError(f"{labels.shape[0]} labels for {count} feature rows: expected one per row")
    if labels.dim() == 2:
        if labels.shape[1] != num_classes:
            raise DirectionsError(f"multi-hot labels with {labels.shape[1]} columns: expected {num_classes}")
        return labels.float()
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DirectionsError(f"labels hold class {int(labels.min())}..{int(labels.max())}: expected "
                              f"0..{num_classes - 1}")
    return F.one_hot(labels.long(), num_classes).float()


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[L, C, H]``: every layer's mean hidden state of each class's examples."""
    member = _memberships(labels, features.shape[1], num_classes).to(features.device)
    counts = member.sum(0)
    if (counts == 0).any():
        missing = (counts == 0).nonzero().flatten().tolist()
        raise DirectionsError(f"class(es) {missing} have no example: every one of the {num_classes} classes needs one")
    return torch.einsum("nc,lnh->lch", member / counts, features.float())


def emotion_directions(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[L, C, H]``: per layer, each class's mean minus the mean of the other classes' means (module docstring).

    ``features``: ``[L, N, H]`` (as cached); ``labels``: class indices ``[N]`` or multi-hot ``[N, C]``.
    """
    if features.dim() != 3:
        raise DirectionsError(f"features of shape {tuple(features.shape)}: expected [layers, N, hidden]")
    if num_classes < 2:
        raise DirectionsError(f"num_classes={num_classes}: a direction needs at least 2 classes")
    means = class_means(features, labels, num_classes)
    others = (means.sum(1, keepdim=True) - means) / (num_classes - 1)
    return means - others


class ProjectionClassifier(nn.Module):
    """Scores of every class at every layer: the standardised features projected on the emotion directions (computed
    from the standardised training features), times one scale per layer, plus one bias per class and layer; the
    scale and biases, 1 + C numbers per layer, are fitted on the training set (`fit_projection`). Same interface as
    `LayerProbes`: features ``[L, B, H]`` → logits ``[L, B, C]``."""

    def __init__(self, num_layers: int, hidden_size: int, num_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_layers, 1, hidden_size))
        self.register_buffer("std", torch.ones(num_layers, 1, hidden_size))
        self.register_buffer("directions", torch.zeros(num_layers, num_classes, hidden_size))
        self.scale = nn.Parameter(torch.ones(num_layers, 1, 1))
        self.bias = nn.Parameter(torch.zeros(num_layers, 1, num_classes))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """``[L, B, C]``: the standardised features' dot product with each direction (no scale, no bias)."""
        return ((features - self.mean) / self.std) @ self.directions.transpose(1, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.scale * self.project(features) + self.bias


def fit_projection(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, max_evaluations: int = 200
) -> ProjectionClassifier:
    """A `ProjectionClassifier` from training features ``[L, N, H]`` and labels (indices ``[N]`` or multi-hot
    ``[N, C]``): directions by `emotion_directions`, then scale and biases by L-BFGS on the training loss
    (cross-entropy, or binary cross-entropy per label for multi-hot targets)."""
    layers, _, hidden = features.shape
    classifier = ProjectionClassifier(layers, hidden, num_classes).to(features.device)
    labels = torch.as_tensor(labels).to(features.device)
    with torch.no_grad():
        classifier.mean.copy_(features.mean(1, keepdim=True))
        classifier.std.copy_(features.std(1, keepdim=True).clamp(min=1e-6))
        standardised = (features - classifier.mean) / classifier.std
        classifier.directions.copy_(emotion_directions(standardised, labels, num_classes))
        projected = standardised @ classifier.directions.transpose(1, 2)
        classifier.scale.copy_(1.0 / projected.std(dim=(1, 2), keepdim=True).clamp(min=1e-6))  # unit-variance start
    optimizer = torch.optim.LBFGS([classifier.scale, classifier.bias], lr=1.0, max_iter=max_evaluations,
                                  line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = layer_losses(classifier.scale * projected + classifier.bias, labels).sum()
        loss.backward()
        return loss

    optimizer.step(objective)
    return classifier.eval()


@dataclass
class TokenTrajectory:
    """One text's emotion scores at every token: ``values [T, C]`` (projections on the directions, or a probe's
    probabilities) of ``tokens`` at ``layer``."""

    tokens: list[str]
    values: torch.Tensor
    classes: list[str]
    layer: int
    kind: str  # "projection" or "probability"

    def write_csv(self, path: Path) -> Path:
        """Columns ``token_index``, ``token``, then one per class; one row per token."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["token_index", "token", *self.classes])
            for index, (token, row) in enumerate(zip(self.tokens, self.values.tolist())):
                writer.writerow([index, token, *(f"{value:.6g}" for value in row)])
        return path


@torch.no_grad()
def token_trajectory(
    extractor: HiddenStateExtractor,
    text: str,
    scorer: nn.Module,
    classes: Sequence[str],
    *,
    layer: int | None = None,
    kind: str = "projection",
    multi_label: bool = False,
) -> TokenTrajectory:
    """Every token's emotion scores in ``text`` (in the extractor's input format) at ``layer`` (one of the
    extractor's layers; default its deepest). ``scorer``: a `ProjectionClassifier` or `LayerProbes` trained on the
    extractor's layers. ``kind``: ``projection`` (the standardised hidden state's dot product with each direction;
    a `ProjectionClassifier` only) or ``probability`` (softmax of the scorer's logits; sigmoid per label if
    ``multi_label``). A probe trained on pooled states reads single tokens here, which it has not seen in training:
    the curve says where in the text the emotion becomes readable, not a calibrated probability."""
    layer = extractor.layers[-1] if layer is None else layer
    if layer not in extractor.layers:
        raise DirectionsError(f"layer={layer}: the extractor reads layers {extractor.layers}")
    if kind not in ("projection", "probability"):
        raise DirectionsError(f"kind={kind!r}: expected 'projection' or 'probability'")
    if kind == "projection" and not isinstance(scorer, ProjectionClassifier):
        raise DirectionsError(f"kind='projection' needs a ProjectionClassifier, got {type(scorer).__name__}")
    ids = extractor.encode([text])[0]
    states = extractor.token_states(ids).to(next(scorer.buffers()).device)
    if kind == "projection":
        values = scorer.project(states)
    else:
        logits = scorer(states)
        values = logits.sigmoid() if multi_label else logits.softmax(-1)
    position = extractor.layers.index(layer)
    tokens = [extractor.tokenizer.decode([token]) for token in ids]
    return TokenTrajectory(tokens, values[position].float().cpu(), list(classes), layer, kind)
