"""affectlab.models: plain PyTorch emotion-recognition models (no Lightning).

- `create_clip(name, pretrained)`: an open_clip CLIP (names include this package's tiny CPU config
  "affectlab-tiny") with its tokenizer and preprocessing, from random init, an open_clip tag or a local file
  (open_clip state dict or OpenAI TorchScript archive).
- `ClipCaer`: CLIP-CAER, face + context clips -> class logits against learnable-context class prompts.
- `TemporalTransformer`, `PromptLearner`, `TextEncoder`: its parts.
"""

from affectlab.models.clip import ClipParts, create_clip
from affectlab.models.clip_caer import ClipCaer
from affectlab.models.errors import ModelError
from affectlab.models.prompts import PromptLearner, TextEncoder
from affectlab.models.temporal import TemporalTransformer

__all__ = ["ClipCaer", "ClipParts", "ModelError", "PromptLearner", "TemporalTransformer", "TextEncoder",
           "create_clip"]
