"""Importing the CLIP-CAER authors' checkpoint: a state dict with their GenerateModel key names and shapes (built
here on the tiny CLIP), converted into ClipCaer, gives the logits that their forward pass computes from the same
weights. The reference below re-implements their forward from the raw tensors (their Temporal_Transformer_Cls:
pre-norm residual attention without qkv bias, tanh-GELU feed-forward, class token)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from affectlab.lab.config import load_config
from affectlab.lab.raer.nets import build_net
from affectlab.models import ClipCaer, ModelError, convert_clip_caer_state_dict, create_clip, load_clip_caer_checkpoint
from builders import AUTHORS_FRAMES as FRAMES, AUTHORS_HEADS as HEADS, AUTHORS_MLP as MLP, AUTHORS_N_CTX as N_CTX, authors_state_dict


def their_temporal(state: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    """Temporal_Transformer_Cls.forward (eval mode) written out from the tensors."""
    p = lambda key: state[f"{name}.temporal_transformer.layers.0.{key}"]  # noqa: E731
    b, n, dim = x.shape
    x = torch.cat([state[f"{name}.cls_token"].expand(b, -1, -1), x], dim=1) + state[f"{name}.pos_embedding"][:, : n + 1]
    h = F.layer_norm(x, (dim,), p("0.fn.norm.weight"), p("0.fn.norm.bias"))
    q, k, v = (t.unflatten(-1, (HEADS, dim // HEADS)).transpose(1, 2) for t in (h @ p("0.fn.fn.to_qkv.weight").t()).chunk(3, -1))
    attention = (q @ k.transpose(-1, -2) * (dim // HEADS) ** -0.5).softmax(dim=-1)
    out = (attention @ v).transpose(1, 2).flatten(2)
    x = x + out @ p("0.fn.fn.to_out.0.weight").t() + p("0.fn.fn.to_out.0.bias")
    h = F.layer_norm(x, (dim,), p("1.fn.norm.weight"), p("1.fn.norm.bias"))
    h = h @ p("1.fn.fn.net.0.weight").t() + p("1.fn.fn.net.0.bias")
    h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))  # their GELU
    x = x + h @ p("1.fn.fn.net.3.weight").t() + p("1.fn.fn.net.3.bias")
    return x[:, 0]


def their_logits(state: dict, eos: list[int], face: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
    """GenerateModel.forward from the same weights: CLIP towers loaded from clip_model_.*, the rest by hand."""
    reference = create_clip("affectlab-tiny").model
    reference.load_state_dict({k.removeprefix("clip_model_."): v for k, v in state.items()
                               if k.startswith("clip_model_.")})
    reference.eval()
    streams = []
    for name, clip in (("temporal_net", face), ("temporal_net_body", body)):
        frames = reference.visual(clip.flatten(0, 1)).unflatten(0, clip.shape[:2])
        streams.append(their_temporal(state, name, frames))
    video = torch.cat(streams, dim=-1) @ state["project_fc.weight"].t() + state["project_fc.bias"]
    video = video / video.norm(dim=-1, keepdim=True)
    prompts = torch.cat([state["prompt_learner.token_prefix"], state["prompt_learner.ctx"],
                         state["prompt_learner.token_suffix"]], dim=1)
    x = reference.transformer(prompts + reference.positional_embedding, attn_mask=reference.attn_mask)
    x = reference.ln_final(x)
    text = x[torch.arange(len(eos)), eos] @ reference.text_projection
    text = text / text.norm(dim=-1, keepdim=True)
    return video @ text.t() / 0.01


def ours(texts=("a", "b", "c", "d", "e")) -> ClipCaer:
    clip = create_clip("affectlab-tiny")
    return ClipCaer(clip.model, clip.tokenizer, list(texts), num_frames=16, n_ctx=N_CTX, temporal_heads=HEADS,
                    temporal_mlp_dim=MLP, temporal_activation="gelu_tanh").eval()


def test_converted_authors_checkpoint_gives_their_logits(tmp_path):
    generator = torch.Generator().manual_seed(0)
    state, eos = authors_state_dict(generator)
    face, body = torch.randn(2, FRAMES, 3, 48, 48, generator=generator), torch.randn(2, FRAMES, 3, 48, 48, generator=generator)
    path = tmp_path / "model_best.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # as a DataParallel run saves
    net = ours()  # other class texts on purpose: the prompts come from the checkpoint
    load_clip_caer_checkpoint(net, path)
    with torch.no_grad():
        expected = their_logits(state, eos, face, body)
        got = net(face=face, context=body)
    assert expected.std() > 0.5  # the logits tell classes apart, so agreement is not trivial
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)
    assert convert_clip_caer_state_dict(state)["prompt_learner.tokens"].argmax(dim=-1).tolist() == eos


def test_checkpoint_key_in_config_loads_it_into_the_built_model(tmp_path):
    state, _ = authors_state_dict(torch.Generator().manual_seed(1))
    torch.save(state, tmp_path / "authors.pth")
    net, _, _ = build_net(load_config("raer", [f"model.checkpoint={tmp_path / 'authors.pth'}", "data.num_segments=16",
                                              "model.temporal_mlp_dim=128", "model.temporal_activation=gelu_tanh",
                                              "model.quick_gelu=true"],
                                      environ={}))
    assert torch.equal(net.projection.weight, state["project_fc.weight"])
    assert torch.equal(net.temporal["context"].class_token, state["temporal_net_body.cls_token"])


def test_mismatched_model_names_what_to_build(tmp_path):
    state, _ = authors_state_dict(torch.Generator().manual_seed(2))
    clip = create_clip("affectlab-tiny")
    wrong = ClipCaer(clip.model, clip.tokenizer, list("abcde"), num_frames=16, n_ctx=N_CTX)  # 4 x 64 feed-forward
    with pytest.raises(ModelError, match=r"temporal_mlp_dim=1024"):
        load_clip_caer_checkpoint(wrong, state)
    with pytest.raises(ModelError, match=r"lacks \['project_fc.weight'\]"):
        convert_clip_caer_state_dict({k: v for k, v in state.items() if k != "project_fc.weight"})
