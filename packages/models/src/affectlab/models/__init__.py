"""affectlab.models: plain PyTorch emotion-recognition models (no Lightning).

- `create_clip(name, pretrained)`: an open_clip CLIP (names include this package's tiny CPU config
  "affectlab-tiny") with its tokenizer and preprocessing, from random init, an open_clip tag or a local file
  (open_clip state dict or OpenAI TorchScript archive).
- `ClipCaer`: CLIP-CAER, face + context clips -> class logits against learnable-context class prompts.
- `TemporalTransformer`, `PromptLearner`, `TextEncoder`: its parts.
- `FormerDfer`: the facial-dynamics baseline, a timm backbone per frame + a temporal transformer.
- `class_balanced_weights`: loss weights for imbalanced classes (effective number of samples).
- `load_clip_caer_checkpoint`, `convert_clip_caer_state_dict`: the authors' released CLIP-CAER weights -> `ClipCaer`.
"""

from affectlab.models.clip import ClipParts, create_clip
from affectlab.models.clip_caer import ClipCaer
from affectlab.models.convert import convert_clip_caer_state_dict, load_clip_caer_checkpoint
from affectlab.models.errors import ModelError
from affectlab.models.former_dfer import FormerDfer
from affectlab.models.losses import class_balanced_weights
from affectlab.models.prompts import PromptLearner, TextEncoder
from affectlab.models.temporal import TemporalTransformer

__all__ = ["ClipCaer", "ClipParts", "FormerDfer", "ModelError", "PromptLearner", "TemporalTransformer", "TextEncoder",
           "class_balanced_weights", "convert_clip_caer_state_dict", "create_clip", "load_clip_caer_checkpoint"]
