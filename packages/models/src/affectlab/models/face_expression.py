"""Face-expression modalities: 8 basic-emotion probabilities per segment from its face frames.

- `StaticFaceExpression`: a per-frame classifier on a timm backbone, its softmax averaged over the segment.
- `DynamicFaceExpression`: per-frame CLIP image embeddings (frozen encoder) through a temporal transformer, then a
  linear head: the facial dynamics the static model averages away.

Both map frames [B, T, 3, H, W] to probabilities [B, 8], like every modality predictor; `logits` gives what the
cross-entropy trains.
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affectlab.models.errors import ModelError
from affectlab.models.temporal import TemporalTransformer

NUM_BASIC = 8


def _check_frames(frames: Tensor, who: str) -> None:
    if frames.ndim != 5:
        raise ModelError(f"{who} got frames of shape {tuple(frames.shape)}; expected [B, T, 3, H, W]")


class StaticFaceExpression(nn.Module):
    def __init__(self, backbone: str = "resnet18", pretrained: bool = False, num_classes: int = NUM_BASIC):
        super().__init__()
        self.net = timm.create_model(backbone, pretrained=pretrained, num_classes=num_classes)

    def logits(self, frames: Tensor) -> Tensor:
        """[B, T, C] per-frame logits."""
        _check_frames(frames, "StaticFaceExpression")
        return self.net(frames.flatten(0, 1)).view(*frames.shape[:2], -1)

    def forward(self, frames: Tensor) -> Tensor:
        return torch.softmax(self.logits(frames), dim=-1).mean(dim=1)


class DynamicFaceExpression(nn.Module):
    def __init__(
        self, clip_model: nn.Module, num_frames: int = 20, num_classes: int = NUM_BASIC, depth: int = 1, heads: int = 8
    ):
        super().__init__()
        self.image_encoder = clip_model.visual.eval().requires_grad_(False)
        projection = clip_model.text_projection
        dim = projection.out_features if isinstance(projection, nn.Linear) else projection.shape[1]
        self.temporal = TemporalTransformer(dim, num_frames, depth=depth, heads=heads)
        self.head = nn.Linear(dim, num_classes)

    def logits(self, frames: Tensor) -> Tensor:
        """[B, C] segment logits."""
        _check_frames(frames, "DynamicFaceExpression")
        with torch.no_grad():
            embeddings = F.normalize(self.image_encoder(frames.flatten(0, 1)).float(), dim=-1)
        return self.head(self.temporal(embeddings.view(*frames.shape[:2], -1)))

    def forward(self, frames: Tensor) -> Tensor:
        return torch.softmax(self.logits(frames), dim=-1)
