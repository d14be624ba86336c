"""The feature-based model of "Textualized and Feature-based Models for Compound Multimodal Emotion Recognition in the
Wild" (Richet et al., 2024): per-modality feature vectors fused by attention.

Each modality's vector is projected to one token (plus a learned modality embedding), a learnable query token is put
in front, a small transformer encoder mixes them, and a linear classifier reads the query's output. A missing modality
is a padding key: no token attends to it, so its values (even NaN) cannot change the logits.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from affectlab.models.errors import ModelError


class AttentionFusion(nn.Module):
    """``forward(features, present)``: ``features`` {modality: [B, D_m]}, ``present`` [B, M] bool in the order of
    ``input_dims`` -> logits [B, num_classes]."""

    def __init__(self, input_dims: Mapping[str, int], num_classes: int, *, dim: int = 64, depth: int = 1,
                 heads: int = 4, dropout: float = 0.1):
        super().__init__()
        if not input_dims:
            raise ModelError("AttentionFusion needs at least one modality in input_dims")
        if dim % heads:
            raise ModelError(f"dim={dim} is not divisible by heads={heads}")
        self.modalities = tuple(input_dims)
        self.project = nn.ModuleDict({m: nn.Sequential(nn.LayerNorm(d), nn.Linear(d, dim))
                                      for m, d in input_dims.items()})
        self.modality_embedding = nn.Parameter(torch.zeros(len(self.modalities), dim))
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.modality_embedding, std=0.02)
        nn.init.normal_(self.query, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True,
                                           norm_first=True)
        # no nested tensors: they would drop padded positions, which is fine, but change numerics between modes
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, features: Mapping[str, torch.Tensor], present: torch.Tensor | None = None) -> torch.Tensor:
        missing = [m for m in self.modalities if m not in features]
        if missing:
            raise ModelError(f"features lack modality {missing}; expected {list(self.modalities)}")
        batch = features[self.modalities[0]].shape[0]
        if present is None:
            present = torch.ones(batch, len(self.modalities), dtype=torch.bool, device=self.query.device)
        present = present.bool()
        tokens = []
        for k, m in enumerate(self.modalities):
            # zeroed first: a masked key gets weight exactly 0, but 0 * NaN would still be NaN
            x = torch.where(present[:, k, None], features[m].float(), torch.zeros_like(features[m].float()))
            tokens.append(self.project[m](x) + self.modality_embedding[k])
        sequence = torch.cat([self.query.expand(batch, -1, -1), torch.stack(tokens, dim=1)], dim=1)
        padding = torch.cat([torch.zeros(batch, 1, dtype=torch.bool, device=present.device), ~present], dim=1)
        encoded = self.encoder(sequence, src_key_padding_mask=padding)
        return self.head(self.norm(encoded[:, 0]))
