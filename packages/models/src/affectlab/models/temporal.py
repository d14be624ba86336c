"""Temporal transformer that summarises a clip's per-frame features into one vector (DFER-CLIP's temporal model)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from affectlab.models.errors import ModelError


class TemporalTransformer(nn.Module):
    """[B, T, D] frame features -> [B, D]: a learnable class token attends over the frames (ViT-style readout).

    Pre-LN encoder layers with GELU; nn.MultiheadAttention runs PyTorch's fused scaled-dot-product attention.
    Clips may be shorter than `num_frames` (they use the first T+1 positions). mlp_dim: the feed-forward width
    (4 * dim by default; DFER-CLIP/CLIP-CAER's released models use 1024 for dim 512); activation: "gelu" (exact) or
    "gelu_tanh" (the tanh approximation those released models were trained with).
    """

    def __init__(self, dim: int, num_frames: int, depth: int = 1, heads: int = 8, dropout: float = 0.0,
                 mlp_dim: int | None = None, activation: str = "gelu"):
        super().__init__()
        if activation not in ("gelu", "gelu_tanh"):
            raise ModelError(f"TemporalTransformer activation={activation!r}; expected 'gelu' or 'gelu_tanh'")
        if dim % heads:
            raise ModelError(f"TemporalTransformer dim={dim} is not divisible by heads={heads}; "
                             f"expected dim to be a multiple of heads")
        self.num_frames = num_frames
        self.class_token = nn.Parameter(torch.empty(1, 1, dim).normal_(std=0.02))
        self.positions = nn.Parameter(torch.empty(1, num_frames + 1, dim).normal_(std=0.02))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=mlp_dim or 4 * dim, dropout=dropout,
                                           activation="gelu" if activation == "gelu" else TanhGelu(),
                                           batch_first=True, norm_first=True)
        # Nested tensors only speed up padded batches, which never occur here (and warn with norm_first).
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[1] > self.num_frames or x.shape[2] != self.class_token.shape[2]:
            raise ModelError(f"TemporalTransformer got frames of shape {tuple(x.shape)}; expected "
                             f"[batch, T <= {self.num_frames}, {self.class_token.shape[2]}]")
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.positions[:, : x.shape[1]]
        return self.encoder(x)[:, 0]


class TanhGelu(nn.Module):
    """GELU's tanh approximation. Not an nn.GELU on purpose: PyTorch's inference fast path of
    nn.TransformerEncoderLayer treats any nn.GELU as the exact one."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.gelu(x, approximate="tanh")
