"""A facial-dynamics baseline in the style of Former-DFER (Zhao & Liu, "Former-DFER: Dynamic Facial Expression
Recognition Transformer", ACM MM 2021): a spatial image model embeds every face frame, a temporal transformer
summarises the clip, a linear layer gives the class logits. Here the spatial model is any timm backbone by name.
"""

from __future__ import annotations

from pathlib import Path

import timm
from torch import Tensor, nn

from affectlab.models.errors import ModelError
from affectlab.models.temporal import TemporalTransformer


class FormerDfer(nn.Module):
    """Face clips [B, T, 3, H, W] -> logits [B, C] for cross-entropy (the same call as ClipCaer's, face only).

    backbone: a timm model name (`timm.list_models()`); pretrained: None for random init or a local weights file
    that timm loads into that backbone (nothing is downloaded).
    """

    def __init__(self, backbone: str, num_classes: int, *, num_frames: int = 16, pretrained: str | None = None,
                 temporal_depth: int = 1, temporal_heads: int = 8):
        super().__init__()
        if backbone not in timm.list_models():
            raise ModelError(f"unknown timm backbone {backbone!r}; expected a name of timm.list_models()")
        if pretrained is not None and not Path(pretrained).is_file():
            raise ModelError(f"pretrained={pretrained!r} for {backbone!r} is not a file; expected a local timm "
                             f"weights file (.pth/.safetensors)")
        overlay = {"file": str(pretrained)} if pretrained else None
        self.backbone = timm.create_model(backbone, pretrained=bool(pretrained), num_classes=0,
                                          pretrained_cfg_overlay=overlay)
        dim = self.backbone.num_features
        self.temporal = TemporalTransformer(dim, num_frames, depth=temporal_depth, heads=temporal_heads)
        self.head = nn.Linear(dim, num_classes)

    @property
    def data_config(self) -> dict:
        """The backbone's input normalisation (timm's mean and std)."""
        return timm.data.resolve_data_config({}, model=self.backbone)

    def forward(self, face: Tensor | None = None, context: Tensor | None = None) -> Tensor:
        if face is None or face.ndim != 5 or face.shape[2] != 3:
            raise ModelError(f"FormerDfer needs face clips [B, T, 3, H, W]; got "
                             f"{None if face is None else tuple(face.shape)}")
        features = self.backbone(face.flatten(0, 1)).unflatten(0, face.shape[:2])
        return self.head(self.temporal(features))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimiser group, named as ClipCaer's so one `optim.lr` table serves both."""
        modules = {"image_encoder": self.backbone, "temporal": self.temporal, "projection": self.head}
        return {group: [p for p in module.parameters() if p.requires_grad] for group, module in modules.items()}
