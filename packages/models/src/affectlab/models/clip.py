"""Build an open_clip CLIP by name, from random init, an open_clip pretrained tag or a local weights file.

Importing this module registers the JSON configs in `model_configs/` (e.g. "affectlab-tiny") with open_clip, so
they are model names exactly like "ViT-B-32".
"""

from __future__ import annotations

import difflib
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from affectlab.models.errors import ModelError

MODEL_CONFIGS = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIGS)

# Entries of an OpenAI TorchScript archive's state_dict that are not weights (open_clip drops the first three too);
# "attn_mask" appears when an open_clip CLIP itself was scripted.
_TORCHSCRIPT_NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size", "attn_mask")
_NAME_SCHEMAS = ("hf-hub:", "local-dir:")


@dataclass
class ClipParts:
    """A CLIP model with what is needed to feed it: its tokenizer and the image size/normalisation it expects."""

    model: nn.Module
    tokenizer: Any
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def create_clip(name: str, pretrained: str | None = None, *, quick_gelu: bool | None = None) -> ClipParts:
    """Create the open_clip model `name` with weights from `pretrained`.

    pretrained: None for random init; an open_clip tag (`open_clip.list_pretrained_tags_by_model(name)`, downloaded
    by open_clip); or a local file: an open_clip state dict (.pt/.pth/.bin, optionally wrapped in {"state_dict": ...}
    and/or "module."-prefixed, or .safetensors) or an OpenAI CLIP TorchScript archive (OpenAI's `clip` package .pt).
    quick_gelu: None follows the weights (a tag's own setting, True for an OpenAI archive, else False); OpenAI-trained
    weights give wrong features with nn.GELU, so override only on purpose.
    """
    if not name.startswith(_NAME_SCHEMAS) and name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.5)
        raise ModelError(f"unknown CLIP model name {name!r}; close names: {close or 'none'} "
                         f"(all names: open_clip.list_models())")

    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
    is_archive = False
    if pretrained and not tag_cfg:
        path = Path(pretrained)
        if not path.is_file():
            raise ModelError(f"pretrained={pretrained!r} for {name!r} is neither a known tag nor an existing file; "
                             f"tags: {open_clip.list_pretrained_tags_by_model(name)}; a weights file must exist")
        is_archive = _is_torchscript_archive(path)
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get("quick_gelu", False)) or is_archive

    if is_archive:
        model = open_clip.create_model(name, force_quick_gelu=quick_gelu)
        _load_torchscript_weights(model, Path(pretrained), name)
    elif pretrained and not tag_cfg:
        try:
            model = open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=quick_gelu)
        except Exception as error:  # corrupt zip, pickle refused by weights_only, key/shape mismatch, ...
            raise ModelError(f"cannot load {pretrained!r} into {name!r} (expected an open_clip CLIP state dict): "
                             f"{error}") from error
    else:  # random init, or a tag open_clip downloads (once: then from the Hugging Face cache)
        try:
            model = open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=quick_gelu)
        except RuntimeError as error:
            if not (pretrained and "download" in str(error).lower()):
                raise
            raise ModelError(f"the {pretrained!r} weights of {name!r} could not be downloaded (no network, or the Hub "
                             f"unreachable: {str(error).splitlines()[0][:160]}); run once with network (they are then "
                             "cached), or give a local weights file as pretrained") from error

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"]
    if not isinstance(size, int):
        if size[0] != size[1]:
            raise ModelError(f"{name!r} expects non-square {tuple(size)} images; expected a square input size")
        size = size[0]
    return ClipParts(model=model, tokenizer=open_clip.get_tokenizer(name), image_size=int(size),
                     mean=tuple(float(v) for v in cfg["mean"]), std=tuple(float(v) for v in cfg["std"]))


def _is_torchscript_archive(path: Path) -> bool:
    # A TorchScript zip holds <root>/constants.pkl; torch.save state dicts do not (torch checks the same record).
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(entry.rsplit("/", 1)[-1] == "constants.pkl" for entry in archive.namelist())


def _load_torchscript_weights(model: nn.Module, path: Path, name: str) -> None:
    # torch.load(weights_only=True), which open_clip uses, refuses TorchScript archives, so read them with
    # torch.jit.load (as OpenAI's clip package does) and copy the weights; fp16 archive weights are cast to fp32.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=Warning)
        archive = torch.jit.load(str(path), map_location="cpu")
    state_dict = {k: v for k, v in archive.state_dict().items() if k not in _TORCHSCRIPT_NON_WEIGHTS}
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise ModelError(f"TorchScript archive {str(path)!r} does not hold {name!r} CLIP weights "
                         f"(expected an OpenAI CLIP archive of that architecture): {error}") from error
