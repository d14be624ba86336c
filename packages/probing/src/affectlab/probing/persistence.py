"""Persistence: does the emotion of the user's text stay readable in the hidden states as the model's reply goes on?

"Decoding Emotion in the Deep" trains an offset-aware probe: the hidden state at reply position k, plus a learned
embedding of k, into the 7 emotions; trained on random positions 0–512 of the replies, then its accuracy is read at
each position 0–400 (`accuracy_by_offset`, plotted by `affectlab.probing.plots.plot_accuracy_by_offset`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from affectlab.probing.extract import HiddenStateExtractor
from affectlab.probing.probes import probe_optimizer
from affectlab.probing.zero_shot import Replies


def reply_states(extractor: HiddenStateExtractor, replies: Replies) -> list[torch.Tensor]:
    """Per reply, the hidden states of its tokens ``[reply length, hidden]`` at the extractor's (one) layer, computed
    over prompt + reply so that each reply token sees the user's text."""
    if len(extractor.layers) != 1:
        raise ValueError(f"reply_states reads one layer; the extractor has {extractor.layers}")
    return [
        extractor.token_states(ids)[0, start:]
        for ids, start in zip(replies.ids, replies.prompt_lengths)
    ]


class OffsetProbe(nn.Module):
    """The paper's MLP probe on a hidden state plus a learned embedding of its reply position (0..max_offset)."""

    def __init__(self, hidden_size: int, num_classes: int, max_offset: int = 512, width: int = 256):
        super().__init__()
        self.max_offset = max_offset
        self.register_buffer("mean", torch.zeros(hidden_size))
        self.register_buffer("std", torch.ones(hidden_size))
        self.offset_embedding = nn.Embedding(max_offset + 1, hidden_size)
        nn.init.zeros_(self.offset_embedding.weight)  # starts as a plain probe; learns what position adds
        self.mlp = nn.Sequential(nn.Linear(hidden_size, width), nn.ReLU(), nn.Linear(width, num_classes))

    def forward(self, states: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        x = (states - self.mean) / self.std + self.offset_embedding(offsets.clamp(max=self.max_offset))
        return self.mlp(x)


def sample_positions(
    lengths: Sequence[int], per_reply: int, max_offset: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_reply`` uniformly random positions in 0..min(length, max_offset + 1) - 1 of every non-empty reply:
    ``(reply index, position)``."""
    replies, positions = [], []
    for index, length in enumerate(lengths):
        limit = min(length, max_offset + 1)
        if limit == 0:
            continue
        replies.append(torch.full((per_reply,), index))
        positions.append(torch.randint(0, limit, (per_reply,), generator=generator))
    if not replies:
        raise ValueError("every reply is empty: no position to train on")
    return torch.cat(replies), torch.cat(positions)


def fit_offset_probe(
    probe: OffsetProbe,
    states: Sequence[torch.Tensor],
    labels: Sequence[int],
    *,
    per_reply: int = 16,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
) -> list[float]:
    """Trains on random positions of every reply (Adam, 10% warm-up then cosine, as the layer probes)."""
    generator = torch.Generator().manual_seed(seed)
    reply, offset = sample_positions([len(s) for s in states], per_reply, probe.max_offset, generator)
    features = torch.stack([states[r][k] for r, k in zip(reply.tolist(), offset.tolist())])
    targets = torch.as_tensor(labels)[reply]
    with torch.no_grad():
        probe.mean.copy_(features.mean(0))
        probe.std.copy_(features.std(0).clamp(min=1e-6))
    steps = epochs * -(-len(targets) // batch_size)
    optimizer, scheduler = probe_optimizer(probe, steps, lr)
    losses = []
    probe.train()
    for _ in range(epochs):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(probe(features[batch], offset[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
    probe.eval()
    return losses


@torch.no_grad()
def accuracy_by_offset(
    probe: OffsetProbe, states: Sequence[torch.Tensor], labels: Sequence[int], offsets: Sequence[int]
) -> dict[int, tuple[float, int]]:
    """Position → (accuracy over the replies at least that long, how many replies that is)."""
    labels = torch.as_tensor(labels)
    out = {}
    for k in offsets:
        reaching = [i for i, s in enumerate(states) if len(s) > k]
        if not reaching:
            out[k] = (float("nan"), 0)
            continue
        logits = probe(torch.stack([states[i][k] for i in reaching]), torch.full((len(reaching),), k))
        out[k] = ((logits.argmax(-1) == labels[reaching]).float().mean().item(), len(reaching))
    return out
