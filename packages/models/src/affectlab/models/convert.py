"""Import the CLIP-CAER authors' released checkpoint (the state_dict of their `GenerateModel`) into `ClipCaer`.

Their key names -> ours:

    image_encoder.*                      -> image_encoder.*               (OpenAI CLIP visual = open_clip's names)
    text_encoder.*                       -> text_encoder.*
    prompt_learner.ctx / token_prefix / token_suffix -> prompt_learner.*  (+ `tokens`, rebuilt from the suffix)
    temporal_net.*  (face) / temporal_net_body.* (context) -> temporal.face.* / temporal.context.*
        cls_token, pos_embedding         -> class_token, positions
        temporal_transformer.layers.i.0.fn.norm        -> encoder.layers.i.norm1
        temporal_transformer.layers.i.0.fn.fn.to_qkv   -> encoder.layers.i.self_attn.in_proj_weight (no bias: 0)
        temporal_transformer.layers.i.0.fn.fn.to_out.0 -> encoder.layers.i.self_attn.out_proj
        temporal_transformer.layers.i.1.fn.norm        -> encoder.layers.i.norm2
        temporal_transformer.layers.i.1.fn.fn.net.0/.3 -> encoder.layers.i.linear1 / linear2
    project_fc.*                         -> projection.*
    clip_model_.*                        -> dropped (the whole CLIP again; its token embedding locates the EOS)

Their temporal transformers use a 1024-wide feed-forward and GELU's tanh approximation, so the receiving ClipCaer
must be built with `temporal_mlp_dim=1024, temporal_activation="gelu_tanh"` (and QuickGELU in the OpenAI CLIP).
The prompts keep the authors' own class texts: their token_prefix/suffix buffers are what the context was trained
with, so the texts of the receiving model do not matter.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor, nn

from affectlab.models.errors import ModelError

_TEMPORAL = {"temporal_net.": "temporal.face.", "temporal_net_body.": "temporal.context."}
_LAYER_PARTS = {
    "0.fn.norm.": "norm1.",
    "0.fn.fn.to_out.0.": "self_attn.out_proj.",
    "1.fn.norm.": "norm2.",
    "1.fn.fn.net.0.": "linear1.",
    "1.fn.fn.net.3.": "linear2.",
}
_LAYER = re.compile(r"temporal_transformer\.layers\.(\d+)\.(.*)")
SOT_TOKEN_ID, EOT_TOKEN_ID = 49406, 49407  # CLIP's BPE start- and end-of-text ids


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict in a file saved by the authors' training script (a bare state dict, or one under
    "state_dict"/"model", possibly with DataParallel's "module." prefix)."""
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelError(f"{path}: cannot be read as a PyTorch state dict ({error})") from error
    for key in ("state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise ModelError(f"{path}: holds a {type(loaded).__name__}; expected a GenerateModel state dict")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def convert_clip_caer_state_dict(state_dict: dict[str, Tensor], token_embedding: Tensor | None = None,
                                 where: str = "state dict") -> dict[str, Tensor]:
    """The authors' GenerateModel keys -> a state dict that ClipCaer(streams=("face", "context")) loads strictly.

    token_embedding: CLIP's [vocab, width] token embedding, to find each prompt's end-of-text position in the saved
    suffix; taken from the checkpoint's `clip_model_.token_embedding.weight` when it holds one.
    """
    required = ("prompt_learner.ctx", "prompt_learner.token_prefix", "prompt_learner.token_suffix",
                "project_fc.weight", "temporal_net.cls_token", "temporal_net_body.cls_token")
    missing = [k for k in required if k not in state_dict]
    if missing:
        raise ModelError(f"{where}: lacks {missing}; expected the state_dict of CLIP-CAER's GenerateModel")
    converted: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("clip_model_."):
            continue
        if key.startswith(("image_encoder.", "text_encoder.", "prompt_learner.")):
            converted[key] = value
        elif key.startswith("project_fc."):
            converted["projection." + key.removeprefix("project_fc.")] = value
        else:
            prefix = next((p for p in _TEMPORAL if key.startswith(p)), None)
            if prefix is None:
                raise ModelError(f"{where}: unexpected key {key!r}; expected GenerateModel's image_encoder, "
                                 f"text_encoder, prompt_learner, temporal_net(_body), project_fc, clip_model_")
            converted.update(_temporal_entry(_TEMPORAL[prefix], key.removeprefix(prefix), value, where))

    if token_embedding is None:
        token_embedding = state_dict.get("clip_model_.token_embedding.weight")
    if token_embedding is None:
        raise ModelError(f"{where}: has no clip_model_.token_embedding.weight; pass the CLIP's token_embedding")
    converted["prompt_learner.tokens"] = _prompt_tokens(
        state_dict["prompt_learner.token_suffix"], state_dict["prompt_learner.ctx"].shape[-2],
        token_embedding[EOT_TOKEN_ID], where)
    return converted


def load_clip_caer_checkpoint(net: nn.Module, checkpoint: str | Path | dict[str, Tensor]) -> None:
    """Load the authors' checkpoint (a file or its state dict) into a ClipCaer built to match it."""
    where = str(checkpoint) if isinstance(checkpoint, (str, Path)) else "state dict"
    state_dict = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    converted = convert_clip_caer_state_dict(state_dict, where=where)
    try:
        net.load_state_dict(converted, strict=True)
    except RuntimeError as error:
        raise ModelError(f"{where}: does not fit this ClipCaer (build it with streams [face, context], n_ctx = the "
                         f"checkpoint's context length, temporal_mlp_dim=1024, temporal_activation=gelu_tanh and "
                         f"the checkpoint's CLIP backbone): {error}") from error


def _temporal_entry(target: str, key: str, value: Tensor, where: str) -> dict[str, Tensor]:
    if key == "cls_token":
        return {target + "class_token": value}
    if key == "pos_embedding":
        return {target + "positions": value}
    match = _LAYER.fullmatch(key)
    if match:
        layer, rest = match.groups()
        base = f"{target}encoder.layers.{layer}."
        if rest == "0.fn.fn.to_qkv.weight":  # q, k, v stacked in the same order as nn.MultiheadAttention's
            return {base + "self_attn.in_proj_weight": value,
                    base + "self_attn.in_proj_bias": torch.zeros(value.shape[0], dtype=value.dtype)}
        for theirs, ours in _LAYER_PARTS.items():
            if rest.startswith(theirs):
                return {base + ours + rest.removeprefix(theirs): value}
    raise ModelError(f"{where}: unexpected temporal key {key!r}; expected Temporal_Transformer_Cls parameters")


def _prompt_tokens(suffix: Tensor, n_ctx: int, eot_embedding: Tensor, where: str) -> Tensor:
    """Token ids [C, 1 + n_ctx + suffix length] whose argmax is each prompt's end-of-text position (all that the
    text encoder's pooling reads): SOT first, EOT where the saved suffix holds the EOT embedding."""
    is_eot = torch.isclose(suffix, eot_embedding.to(suffix.dtype), atol=1e-6).all(dim=-1)  # [C, L]
    if not is_eot.any(dim=1).all():
        raise ModelError(f"{where}: a prompt's token_suffix holds no end-of-text embedding; expected CLIP prompts")
    tokens = torch.zeros(suffix.shape[0], 1 + n_ctx + suffix.shape[1], dtype=torch.long)
    tokens[:, 0] = SOT_TOKEN_ID
    tokens[torch.arange(suffix.shape[0]), 1 + n_ctx + is_eot.int().argmax(dim=1)] = EOT_TOKEN_ID
    return tokens
