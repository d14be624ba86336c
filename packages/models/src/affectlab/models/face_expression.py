"""Face-expression modalities: 8 basic-emotion probabilities per segment from its face frames.

- `StaticFaceExpression`: a per-frame classifier on a timm backbone, its softmax averaged over the segment.
- `TemporalEmotionHead`: per-frame embeddings of a frozen CLIP image encoder through a temporal transformer, then a
  linear head: the facial dynamics the static model averages away. It trains on embeddings computed once, since the
  encoder is frozen.

Both map a segment to basic-emotion probabilities [B, C] (C = 8 for AffWild2's classes), like every modality
predictor; `logits` gives what the cross-entropy trains. The static model also takes uint8 frames (0..255) and
normalises them as its backbone expects.
"""

from __future__ import annotations

import timm
import torch
from torch import Tensor, nn

from affectlab.models.errors import ModelError
from affectlab.models.temporal import TemporalTransformer

def _check_frames(frames: Tensor, who: str) -> None:
    if frames.ndim != 5:
        raise ModelError(f"{who} got frames of shape {tuple(frames.shape)}; expected [B, T, 3, H, W]")


class StaticFaceExpression(nn.Module):
    def __init__(self, num_classes: int, backbone: str = "resnet18", pretrained: bool = False):
        super().__init__()
        self.net = timm.create_model(backbone, pretrained=pretrained, num_classes=num_classes)
        config = timm.data.resolve_data_config({}, model=self.net)
        self.register_buffer("mean", torch.tensor(config["mean"]).view(3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config["std"]).view(3, 1, 1), persistent=False)

    def logits(self, frames: Tensor) -> Tensor:
        """[B, T, C] per-frame logits; uint8 frames are scaled to [0, 1] and normalised with the backbone's mean/std."""
        _check_frames(frames, "StaticFaceExpression")
        if frames.dtype == torch.uint8:
            frames = (frames.float() / 255.0 - self.mean) / self.std
        return self.net(frames.flatten(0, 1)).view(*frames.shape[:2], -1)

    def forward(self, frames: Tensor) -> Tensor:
        return torch.softmax(self.logits(frames), dim=-1).mean(dim=1)


class TemporalEmotionHead(nn.Module):
    """Per-frame embeddings [B, T, D] -> logits [B, C]: a temporal transformer (class token) and a linear layer."""

    def __init__(self, dim: int, num_frames: int, num_classes: int, depth: int = 1, heads: int = 8):
        super().__init__()
        self.temporal = TemporalTransformer(dim, num_frames, depth=depth, heads=heads)
        self.head = nn.Linear(dim, num_classes)

    def logits(self, embeddings: Tensor) -> Tensor:
        if embeddings.ndim != 3:
            raise ModelError(f"TemporalEmotionHead got embeddings of shape {tuple(embeddings.shape)}; expected "
                             "[B, T, D]")
        return self.head(self.temporal(embeddings))

    def forward(self, embeddings: Tensor) -> Tensor:
        return torch.softmax(self.logits(embeddings), dim=-1)
