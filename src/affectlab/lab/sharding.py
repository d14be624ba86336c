"""Evaluation across processes that counts every sample exactly once.

PyTorch's DistributedSampler pads the last shard with repeated samples so that every rank runs the same number of
batches; those repeats would be counted twice by the metrics. Here the padding is kept (DDP needs equal batch
counts) but marked, so that the steps leave it out of every metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


class EvalShardSampler(Sampler[int]):
    """Rank ``rank``'s strided share of ``range(size)``; a padding slot is yielded as ``-1 - index``."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self.size, self.rank, self.world_size = size, rank, world_size
        self.per_rank = math.ceil(size / world_size) if size else 0

    def __iter__(self) -> Iterator[int]:
        for slot in range(self.rank, self.per_rank * self.world_size, self.world_size):
            yield slot if slot < self.size else -1 - (slot % self.size)

    def __len__(self) -> int:
        return self.per_rank


class MarkPadding(Dataset):
    """Wraps a dataset of dicts: adds ``valid`` (False for the padding slots of an EvalShardSampler)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index if index >= 0 else -1 - index])
        item["valid"] = torch.tensor(index >= 0)
        return item


def rank_and_world(trainer) -> tuple[int, int]:
    """(global rank, world size) of the Trainer a DataModule is attached to; (0, 1) outside one."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def train_sampler(dataset: Dataset, seed: int, trainer) -> Sampler[int] | None:
    """Each process its own shuffled share of the training set; None in one process (the loader shuffles)."""
    rank, world = rank_and_world(trainer)
    if world == 1:
        return None
    return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)


def eval_shards(dataset: Dataset, trainer) -> tuple[Dataset, Sampler[int]]:
    """The dataset and sampler of an evaluation loader that counts every sample once across processes."""
    rank, world = rank_and_world(trainer)
    return MarkPadding(dataset), EvalShardSampler(len(dataset), rank, world)
