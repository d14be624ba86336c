"""Probes for every layer at once: L independent classifiers held as batched weights, trained in one pass.

`affectlab.probing.training.train_probes` trains them to convergence (L-BFGS for the linear probe, AdamW with early
stopping for the MLP); `fit_probes` below is the paper's recipe, kept to reproduce it.

The paper's probe ("Decoding Emotion in the Deep") is a two-layer MLP with ReLU trained with Adam at 1e-4, a linear
warm-up over the first 10% of steps then cosine decay, for one epoch; the linear probe is the baseline. A batch of
features ``[L, B, hidden]`` gives logits ``[L, B, classes]``; the loss is the sum of the L cross-entropies, whose
gradients never mix layers, so this trains L separate probes (Adam's update is per parameter).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PROBE_KINDS = ("mlp", "linear")


def _init_stack(count: int, fan_in: int, fan_out: int) -> tuple[nn.Parameter, nn.Parameter]:
    """``count`` weight matrices and biases initialised as nn.Linear's are (uniform in ±1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    weight = torch.empty(count, fan_in, fan_out).uniform_(-bound, bound)
    bias = torch.empty(count, fan_out).uniform_(-bound, bound)
    return nn.Parameter(weight), nn.Parameter(bias)


class LayerProbes(nn.Module):
    """One probe per layer: ``mlp`` (hidden → ``width`` → ReLU → classes) or ``linear`` (hidden → classes).

    ``mean``/``std`` (per layer and feature, from the training features) standardise the input first: hidden states
    of language models carry a few huge dimensions, and standardising keeps Adam's step size meaningful for all.
    """

    def __init__(self, num_layers: int, hidden_size: int, num_classes: int, kind: str = "mlp", width: int = 256):
        super().__init__()
        if kind not in PROBE_KINDS:
            raise ValueError(f"probe kind {kind!r}: expected one of {PROBE_KINDS}")
        self.kind = kind
        self.register_buffer("mean", torch.zeros(num_layers, 1, hidden_size))
        self.register_buffer("std", torch.ones(num_layers, 1, hidden_size))
        if kind == "mlp":
            self.w1, self.b1 = _init_stack(num_layers, hidden_size, width)
            self.w2, self.b2 = _init_stack(num_layers, width, num_classes)
        else:
            self.w1, self.b1 = _init_stack(num_layers, hidden_size, num_classes)

    @torch.no_grad()
    def fit_standardisation(self, features: torch.Tensor) -> None:
        """Per-layer mean and standard deviation of ``features [L, N, hidden]``."""
        self.mean.copy_(features.mean(dim=1, keepdim=True))
        self.std.copy_(features.std(dim=1, keepdim=True).clamp(min=1e-6))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``[L, B, hidden]`` → logits ``[L, B, classes]``."""
        return self.head(self.standardise(features))

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std

    def head(self, standardised: torch.Tensor) -> torch.Tensor:
        """Logits of features already standardised (a trainer standardises a full batch once, not per step)."""
        x = torch.baddbmm(self.b1.unsqueeze(1), standardised, self.w1)
        if self.kind == "mlp":
            x = torch.baddbmm(self.b2.unsqueeze(1), F.relu(x), self.w2)
        return x

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum over layers of each layer's mean loss (layers stay independent)."""
        return layer_losses(self(features), labels).sum()


def layer_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[L]``: each layer's mean loss of ``logits [L, B, C]``: cross-entropy against class indices ``[B]``, or for
    multi-hot targets ``[B, C]`` (several emotions per text, as GoEmotions) binary cross-entropy per label (sigmoid)."""
    if labels.dim() == 2:
        targets = labels.to(logits.dtype).expand_as(logits)
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=(1, 2))
    per_example = F.cross_entropy(logits.flatten(0, 1), labels.repeat(logits.shape[0]), reduction="none")
    return per_example.view(logits.shape[0], -1).mean(dim=1)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.1):
    """Linear warm-up from 0 over ``warmup_fraction`` of the steps, then cosine decay to 0 (the paper's schedule)."""
    warmup = max(1, round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def probe_optimizer(probes: nn.Module, total_steps: int, lr: float = 1e-4, warmup_fraction: float = 0.1):
    """``(Adam, scheduler)`` as in the paper; the scheduler steps once per batch."""
    optimizer = torch.optim.Adam(probes.parameters(), lr=lr)
    return optimizer, warmup_cosine(optimizer, total_steps, warmup_fraction)


def fit_probes(
    probes: LayerProbes,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 1e-4,
    warmup_fraction: float = 0.1,
    seed: int = 0,
) -> list[float]:
    """Trains every layer's probe in one pass per epoch over ``features [L, N, hidden]``; returns the batch losses.

    The plain-PyTorch loop, for notebooks and the persistence probe; the experiment trains the same module the same
    way under Lightning (`affectlab.lab.probing`).
    """
    probes.fit_standardisation(features)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-features.shape[1] // batch_size)
    optimizer, scheduler = probe_optimizer(probes, epochs * steps_per_epoch, lr, warmup_fraction)
    losses = []
    probes.train()
    for _ in range(epochs):
        order = torch.randperm(features.shape[1], generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = probes.loss(features[:, batch], labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    probes.eval()
    return losses


@torch.no_grad()
def predict(probes: LayerProbes, features: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Logits ``[L, N, classes]`` of every layer's probe."""
    probes.eval()
    return torch.cat([probes(features[:, i : i + batch_size]) for i in range(0, features.shape[1], batch_size)], 1)
