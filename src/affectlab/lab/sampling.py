"""Training samplers that work the same in one process and under DDP."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class ClassBalancedSampler(Sampler[int]):
    """Every epoch draws len(labels) indices with replacement, each class equally likely (an index's probability is
    1 / (number of classes * its class's size)); rank `rank` of `world_size` takes a strided share of the draw.

    The draw depends on (seed, epoch) only, so all ranks agree on it; Lightning calls `set_epoch` every epoch.
    """

    def __init__(self, labels: Sequence[int], seed: int = 0, rank: int = 0, world_size: int = 1):
        counts = Counter(int(label) for label in labels)
        self.weights = torch.tensor([1.0 / counts[int(label)] for label in labels], dtype=torch.float64)
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.per_rank = -(-len(labels) // world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        draw = torch.multinomial(self.weights, self.per_rank * self.world_size, replacement=True, generator=generator)
        return iter(draw[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank
