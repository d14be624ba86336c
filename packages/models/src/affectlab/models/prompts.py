"""Learnable text prompts (CoOp, class-specific context) and the frozen CLIP text transformer that reads them.

CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", 2022): the prompt of class c is
[SOS] [V]_1 ... [V]_M [class text] . [EOS], where the M context vectors [V] are learned word embeddings; with
class-specific context every class has its own M vectors. CLIP-CAER uses M = 8 in front of each class descriptor.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from open_clip.transformer import text_global_pool

from affectlab.models.errors import ModelError

_TEXT_PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection", "attn_mask")


def _check_text_tower(clip_model: nn.Module) -> None:
    missing = [part for part in _TEXT_PARTS if not hasattr(clip_model, part)]
    if missing:
        raise ModelError(f"{type(clip_model).__name__} has no {missing}; expected an open_clip CLIP with its own text "
                         f"transformer (not CustomTextCLIP/CoCa/HF text towers)")


def prompt_text(class_text: str, placeholders: int) -> str:
    """The string tokenised for one class: `placeholders` "X" words (replaced by context vectors), the text, a full stop."""
    text = class_text.strip()
    text = text if text.endswith(".") else text + "."
    return " ".join(["X"] * placeholders + [text])


class PromptLearner(nn.Module):
    """Prompt embeddings [C, context_length, width] for C classes, with n_ctx learnable vectors per class.

    learnable=False is the "without learnable context" ablation: the prompts are the embedded class texts alone.
    The SOS and class-text/EOS embeddings are persistent buffers, so a saved model restores its own prompts.
    """

    def __init__(self, clip_model: nn.Module, tokenizer, class_texts: list[str], n_ctx: int = 8,
                 learnable: bool = True):
        super().__init__()
        _check_text_tower(clip_model)
        if not class_texts:
            raise ModelError("PromptLearner got no class texts; expected one text per class")
        self.n_ctx = n_ctx if learnable else 0
        tokens = tokenizer([prompt_text(text, self.n_ctx) for text in class_texts])
        too_long = [text for text, row in zip(class_texts, tokens) if row[-1] != 0]
        if too_long:
            raise ModelError(f"class texts {too_long} with {self.n_ctx} context words fill all "
                             f"{tokens.shape[1]} text positions; expected shorter texts")
        with torch.no_grad():
            embedding = clip_model.token_embedding(tokens.to(clip_model.token_embedding.weight.device))
        self.register_buffer("tokens", tokens)  # ids: the text encoder pools at the EOS (highest id) position
        self.register_buffer("token_prefix", embedding[:, :1].clone())  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + self.n_ctx:].clone())  # class text, ".", EOS, padding
        if self.n_ctx:
            width = embedding.shape[-1]
            self.ctx = nn.Parameter(torch.empty(len(class_texts), self.n_ctx, width).normal_(std=0.02))
        else:
            self.ctx = None

    def forward(self) -> Tensor:
        parts = [self.token_prefix, self.token_suffix] if self.ctx is None else \
            [self.token_prefix, self.ctx, self.token_suffix]
        return torch.cat(parts, dim=1)


class TextEncoder(nn.Module):
    """open_clip CLIP.encode_text from token EMBEDDINGS onward, so learned context vectors can be fed in.

    Holds (shares) the CLIP's text transformer, ln_final, positional embedding and projection; freezing is the
    owner's choice.
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        _check_text_tower(clip_model)
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.positional_embedding = clip_model.positional_embedding
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)  # causal mask
        self.pool_type = clip_model.text_pool_type  # "argmax" for CLIP configs: EOS has the highest token id
        self.eos_id = getattr(clip_model, "text_eos_id", None)

    def positions_read(self, tokens: Tensor) -> int:
        """How many leading positions of prompts with these token ids decide the pooled feature.

        With the causal mask a position sees only those before it, so pooling at the EOS (argmax/eos pooling) reads
        positions 0..EOS alone: the padding after the longest prompt's EOS can be cut (CLIP-CAER's prompts use ~25
        of 77 positions, a third of the text encoder's work) without changing the result.
        """
        if self.attn_mask is None or self.pool_type not in ("argmax", "eos") or \
                (self.pool_type == "eos" and self.eos_id is None):
            return tokens.shape[1]
        ends = tokens.argmax(dim=-1) if self.pool_type == "argmax" else (tokens == self.eos_id).int().argmax(dim=-1)
        return int(ends.max()) + 1

    def forward(self, prompts: Tensor, tokens: Tensor) -> Tensor:
        """prompts [C, L, width] token embeddings, tokens [C, L] their ids -> [C, embed_dim] (not normalised).

        L may be shorter than the CLIP's context length (see `positions_read`)."""
        cast_dtype = self.transformer.get_cast_dtype()
        length = prompts.shape[1]
        x = prompts.to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x if self.text_projection is None else x @ self.text_projection
