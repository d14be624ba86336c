"""Zero-shot CLIP label matching: a segment's frames against the label words of the basic and compound expressions.

Each frame's CLIP image embedding is compared (cosine x logit_scale) with the text embeddings of the basic and
compound label words (the `words` of the basic8 and cexpr label sets: 8 and 7), put in one prompt template; a softmax
over all of them per frame, averaged over the frames, then renormalised separately over the basic words (the
modality's basic-emotion probabilities) and over the compound words (a direct compound prediction). 9th ABAW
zero-shot compound-expression system.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affectlab.models.errors import ModelError

TEMPLATE = "a photo of a {} face."


class ZeroShotClip(nn.Module):
    """Frames [B, T, 3, H, W] (CLIP-normalised) -> (basic [B, len(basic_words)], compound [B, len(compound_words)])
    probabilities; no training."""

    def __init__(
        self,
        clip_model: nn.Module,
        tokenizer,
        basic_words: Sequence[str],
        compound_words: Sequence[str],
        template: str = TEMPLATE,
        logit_scale: float = 100.0,
    ):
        super().__init__()
        if "{}" not in template:
            raise ModelError(f"template {template!r} has no '{{}}' for the label word; expected e.g. {TEMPLATE!r}")
        self.clip = clip_model.eval().requires_grad_(False)
        self.num_basic, self.logit_scale = len(basic_words), logit_scale
        with torch.no_grad():
            tokens = tokenizer([template.format(word) for word in (*basic_words, *compound_words)])
            self.register_buffer("text", F.normalize(clip_model.encode_text(tokens).float(), dim=-1))

    @torch.no_grad()
    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        if frames.ndim != 5:
            raise ModelError(f"ZeroShotClip got frames of shape {tuple(frames.shape)}; expected [B, T, 3, H, W]")
        image = self.clip.encode_image(frames.flatten(0, 1)).float()
        return self.from_embeddings(image.view(*frames.shape[:2], -1))

    @torch.no_grad()
    def from_embeddings(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """The same from per-frame CLIP image embeddings [B, T, D] (computed once, shared with other modalities)."""
        if image.ndim != 3:
            raise ModelError(f"ZeroShotClip got embeddings of shape {tuple(image.shape)}; expected [B, T, D]")
        per_frame = torch.softmax(self.logit_scale * F.normalize(image.float(), dim=-1) @ self.text.t(), dim=-1)
        mean = per_frame.mean(dim=1)  # over the frames; the softmax above was over all the label words
        basic, compound = mean[:, : self.num_basic], mean[:, self.num_basic :]
        return basic / basic.sum(-1, keepdim=True), compound / compound.sum(-1, keepdim=True)
