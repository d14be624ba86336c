"""Optimisers by the name a config gives (`OPTIMIZERS`), and the learning-rate schedules the experiments use."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from affectlab.lab.config import ConfigError


def sgd(params: Iterable, lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def adamw(params: Iterable, lr: float = 1e-3, weight_decay: float = 0.01, momentum: float = 0.9) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def adam(params: Iterable, lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.9) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


OPTIMIZERS = {"sgd": sgd, "adamw": adamw, "adam": adam}


def create_optimizer(name: str, params: Iterable, **options) -> torch.optim.Optimizer:
    """The optimiser `name` over `params` (parameters, or groups each with its own "lr"); options: lr, weight_decay,
    momentum (SGD's)."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, **options)


def warmup_linear_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float) -> torch.optim.lr_scheduler.LRScheduler:
    """A linear warm-up over the first `warmup` share of the steps, then a linear decay to 0 (the usual schedule for
    fine-tuning a BERT-like encoder); stepped once per batch."""
    total = max(1, int(total_steps))
    warm = int(warmup * total)

    def factor(step: int) -> float:
        return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
