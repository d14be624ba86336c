"""A DataLoader that Lightning can stop and restart in the middle of an epoch, and the random-number generators' states
it keeps.

`ResumableDataLoader` draws each epoch's batches of indices up front; its state (saved in every checkpoint by
Lightning, with `affectlab.lab.checkpoints.ResumeState` counting the trained batches) is how many batches of the epoch
were trained and the generators' states, so a run resumed from any checkpoint draws the same batches with the same
augmentations as the run left alone (exactly with ``num_workers=0``; with worker processes the order of the samples
is the same, their random draws are not).
"""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler


# --- random-number generators ----------------------------------------------------------------------------------------


def rng_state() -> dict:
    """The states of Python's, NumPy's and torch's global generators (CUDA's too when present)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), pos, has_gauss, cached),  # plain types: safe to unpickle
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- a loader that restarts mid-epoch --------------------------------------------------------------------------------


class _PlannedBatches(BatchSampler):
    """A BatchSampler that yields the batches it was handed for this epoch (``plan``), else its own draw."""

    def __init__(self, sampler, batch_size: int, drop_last: bool):
        super().__init__(sampler, batch_size, drop_last)
        self.plan: list[list[int]] | None = None

    def draw(self) -> list[list[int]]:
        """The epoch's batches of indices, drawn from the sampler now."""
        return [list(batch) for batch in super().__iter__()]

    def __iter__(self):
        plan, self.plan = self.plan, None
        return iter(plan) if plan is not None else super().__iter__()


class ResumableDataLoader(DataLoader):
    """A DataLoader (same arguments) whose ``state_dict`` lets Lightning resume it in the middle of an epoch.

    Each epoch's batches of indices are drawn from the sampler up front; the state is the number of batches trained,
    the generators' states when the epoch began and before each batch still in Lightning's prefetch buffer, and now.
    Resuming draws the epoch's batches again from the epoch's starting state, skips the trained ones and puts the
    generators back where the run left alone had them. Lightning's `ResumeState` callback counts the trained batches.
    """

    def __init__(self, dataset, batch_size: int | None = 1, shuffle: bool | None = None, sampler=None,
                 batch_sampler=None, drop_last: bool = False, **kwargs):
        if batch_sampler is None:
            if batch_size is None:
                raise ValueError("ResumableDataLoader needs batches (batch_size=None is not supported)")
            if sampler is None:
                sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
            batch_sampler = _PlannedBatches(sampler, batch_size, drop_last)
        elif type(batch_sampler) is BatchSampler:
            batch_sampler = _PlannedBatches(batch_sampler.sampler, batch_sampler.batch_size, batch_sampler.drop_last)
        elif not isinstance(batch_sampler, _PlannedBatches):
            raise TypeError(f"ResumableDataLoader takes a plain BatchSampler, not {type(batch_sampler).__name__}")
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        # DataLoader names a placeholder SequentialSampler when given batches; the real one tells Lightning that the
        # loader shuffles (overfit_batches then rebuilds it with a SequentialSampler: the same batch every epoch)
        object.__setattr__(self, "sampler", batch_sampler.sampler)
        self.trained: int | None = None  # batches of this epoch that training started (set by ResumeState)
        self._fetched = 0
        self._epoch_rng: dict | None = None
        self._before_fetch: deque[dict] = deque(maxlen=4)  # generator states before the last few fetches
        self._resume: dict | None = None

    def __iter__(self):
        resume, self._resume = self._resume, None
        if resume is not None and resume["done"] >= resume["length"]:  # saved after the epoch ended
            set_rng_state(resume["rng"])
            resume = None
        if resume is not None:
            set_rng_state(resume["epoch_rng"])
        self._epoch_rng = rng_state()
        plan = self.batch_sampler.draw()  # the epoch's batches, drawn from the epoch's generator states
        skip = min(resume["done"], len(plan)) if resume else 0
        self.batch_sampler.plan = plan[skip:]
        self._fetched, self.trained = skip, skip
        self._before_fetch.clear()
        refetch = list(resume["refetch"]) if resume else []
        return self._batches(super().__iter__(), refetch, resume["rng"] if resume else None)

    def _batches(self, iterator, refetch: list[dict], rng_at_save: dict | None):
        # Batches Lightning had prefetched but not trained when the checkpoint was saved are fetched again with the
        # generator states they had; right after them the generators take their state at the save.
        if rng_at_save is not None and not refetch:
            set_rng_state(rng_at_save)
        position = 0
        while True:
            if position < len(refetch):
                set_rng_state(refetch[position])
            self._before_fetch.append(rng_state())
            try:
                batch = next(iterator)
            except StopIteration:
                return
            position += 1
            if position == len(refetch) and rng_at_save is not None:
                set_rng_state(rng_at_save)
            self._fetched += 1
            yield batch

    def state_dict(self) -> dict:
        trained = self._fetched if self.trained is None else self.trained
        pending = max(0, self._fetched - trained)  # fetched ahead by Lightning, not trained yet
        before = list(self._before_fetch)
        return {
            "done": trained,
            "length": len(self.batch_sampler),
            "epoch_rng": self._epoch_rng,
            "refetch": before[len(before) - pending:] if pending else [],
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._resume = state
