"""How many threads torch may use in each process of a CPU run."""

from __future__ import annotations

import os

import torch


def set_torch_threads(requested: int | None, loader_workers: int) -> int:
    """``requested`` threads, or the cores shared out among this node's processes and their loader workers.

    Oversubscribed cores make OpenMP spin: on 2 cores with 2 loader workers, 2 torch threads ran a tiny CLIP-CAER
    step 4.5x slower than 1.
    """
    if not requested:
        processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        requested = max(1, (os.cpu_count() or 1) // (processes * (1 + loader_workers)))
    torch.set_num_threads(requested)
    return requested
