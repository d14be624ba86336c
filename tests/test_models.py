"""affectlab.models: CLIP factory and weights loading, temporal transformer, CoOp prompts, CLIP-CAER."""

import copy
import dataclasses
import math
import warnings

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file
from torch import nn

from affectlab.models import ClipCaer, ModelError, PromptLearner, TemporalTransformer, TextEncoder, create_clip

CLASSES = ["a neutral student", "a confused student with furrowed brows", "an enjoying student smiling",
           "a tired student yawning"]
B, T, SIZE, DIM = 2, 4, 48, 64


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is faster (conftest)


@pytest.fixture(scope="module")
def base_parts():
    torch.manual_seed(0)
    return create_clip("affectlab-tiny")


@pytest.fixture
def parts(base_parts):
    # ClipCaer shares (and freezes, and trains) the CLIP's modules: every test gets its own copy.
    return dataclasses.replace(base_parts, model=copy.deepcopy(base_parts.model))


def clips(batch=B, frames=T, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, SIZE, SIZE, generator=generator)


def caer(parts, **options):
    torch.manual_seed(1)
    options.setdefault("num_frames", T)
    return ClipCaer(parts.model, parts.tokenizer, CLASSES, **options).eval()


# --- create_clip -------------------------------------------------------------------------------------------------

def test_tiny_config_registered(parts):
    assert "affectlab-tiny" in open_clip.list_models()
    assert parts.image_size == SIZE
    assert parts.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    assert parts.std == pytest.approx(open_clip.OPENAI_DATASET_STD)
    assert parts.model.encode_image(torch.randn(1, 3, SIZE, SIZE)).shape == (1, DIM)
    assert parts.tokenizer(["a face"]).shape == (1, 77)


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ModelError, match="affectlab-tiny"):
        create_clip("affectlab-tny")


def test_unknown_pretrained_is_a_clear_error():
    with pytest.raises(ModelError) as error:
        create_clip("ViT-B-32", pretrained="no-such-tag")
    message = str(error.value)
    assert "'no-such-tag'" in message and "laion2b_s34b_b79k" in message and "must exist" in message


def _same_weights(model, reference):
    mine, theirs = model.state_dict(), reference.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize("fmt", ["state_dict.pt", "wrapped_module_prefixed.pth", "weights.safetensors"])
def test_pretrained_from_saved_open_clip_checkpoint(tmp_path, base_parts, fmt):
    weights = base_parts.model.state_dict()
    path = tmp_path / fmt
    if fmt.startswith("wrapped"):
        torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}, "epoch": 3}, path)
    elif fmt.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    else:
        torch.save(weights, path)

    torch.manual_seed(123)  # a different random init, so equality can only come from the file
    loaded = create_clip("affectlab-tiny", pretrained=str(path)).model

    assert _same_weights(loaded, base_parts.model)
    image = torch.randn(2, 3, SIZE, SIZE)
    assert torch.equal(loaded.eval().encode_image(image), base_parts.model.eval().encode_image(image))


class _OpenAiLikeArchive(nn.Module):
    """What OpenAI's clip package downloads: a TorchScript CLIP with fp16 weights under the CLIP names plus the
    non-weight entries input_resolution / context_length / vocab_size."""

    def __init__(self, clip):
        super().__init__()
        for name, child in clip.named_children():
            setattr(self, name, child)
        for name, parameter in clip.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        self.register_buffer("input_resolution", torch.tensor(SIZE))
        self.register_buffer("context_length", torch.tensor(77))
        self.register_buffer("vocab_size", torch.tensor(49408))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)


def test_pretrained_from_openai_jit_archive(tmp_path, base_parts):
    path = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; OpenAI's archives exist all the same
        torch.jit.script(_OpenAiLikeArchive(copy.deepcopy(base_parts.model)).half()).save(str(path))

    loaded = create_clip("affectlab-tiny", pretrained=str(path)).model

    expected = {k: v.half().float() for k, v in base_parts.model.state_dict().items()}
    assert {k: v.dtype for k, v in loaded.state_dict().items()} == {k: torch.float32 for k in expected}
    assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)
    # OpenAI trained with QuickGELU, so an archive gets it unless told otherwise
    assert isinstance(loaded.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert isinstance(create_clip("affectlab-tiny").model.visual.transformer.resblocks[0].mlp.gelu, nn.GELU)


def test_weights_of_another_architecture_are_a_clear_error(tmp_path, base_parts):
    path = tmp_path / "other.pt"
    weights = base_parts.model.state_dict()
    weights["visual.proj"] = torch.zeros(64, 32)
    torch.save(weights, path)
    with pytest.raises(ModelError, match="other.pt"):
        create_clip("affectlab-tiny", pretrained=str(path))


# --- temporal transformer ----------------------------------------------------------------------------------------

def test_temporal_transformer_returns_class_token_and_handles_shorter_clips():
    torch.manual_seed(0)
    temporal = TemporalTransformer(DIM, num_frames=T, depth=2, heads=8).eval()
    frames = torch.randn(B, T, DIM)

    out = temporal(frames)
    tokens = torch.cat([temporal.class_token.expand(B, -1, -1), frames], dim=1) + temporal.positions
    assert out.shape == (B, DIM)
    assert torch.allclose(out, temporal.encoder(tokens)[:, 0], atol=1e-6)

    short = temporal(frames[:, :2])
    assert short.shape == (B, DIM) and not torch.allclose(short, out)
    assert torch.allclose(temporal(frames[:1]), out[:1], atol=1e-6)  # each clip is summarised on its own
    with pytest.raises(ModelError, match=r"T <= 4"):
        temporal(torch.randn(B, T + 1, DIM))


# --- prompts ---------------------------------------------------------------------------------------------------

def test_text_encoder_matches_encode_text_without_context(parts):
    prompts = PromptLearner(parts.model, parts.tokenizer, CLASSES, learnable=False)
    tokens = parts.tokenizer([text + "." for text in CLASSES])
    assert torch.equal(prompts.tokens, tokens)
    assert not list(prompts.parameters())

    with torch.no_grad():
        encoded = TextEncoder(parts.model)(prompts(), prompts.tokens)
        assert torch.equal(encoded, parts.model.encode_text(tokens))


def test_prompt_learner_puts_class_specific_context_between_sos_and_class_text(parts):
    torch.manual_seed(0)
    prompts = PromptLearner(parts.model, parts.tokenizer, CLASSES, n_ctx=8)
    embedded = prompts()
    with torch.no_grad():
        plain = parts.model.token_embedding(parts.tokenizer([text + "." for text in CLASSES]))

    assert prompts.ctx.shape == (len(CLASSES), 8, DIM)
    assert 0.015 < prompts.ctx.std().item() < 0.025  # CoOp init N(0, 0.02)
    assert torch.equal(embedded[:, 1:9], prompts.ctx)
    assert torch.equal(embedded[:, 0], plain[:, 0])  # SOS
    assert torch.equal(embedded[:, 9:], plain[:, 1:-8])  # class text, ".", EOS, padding
    assert torch.equal(prompts.tokens.argmax(dim=1), (prompts.tokens != 0).sum(dim=1) - 1)  # EOS is pooled


def test_class_text_too_long_for_the_context_is_an_error(parts):
    with pytest.raises(ModelError, match="fill all 77"):
        PromptLearner(parts.model, parts.tokenizer, ["word " * 80])


# --- CLIP-CAER -------------------------------------------------------------------------------------------------

def test_clip_caer_logits_shape_and_scale(parts):
    model = caer(parts)
    face, context = clips(seed=1), clips(seed=2)
    with torch.no_grad():
        logits = model(face=face, context=context)
        video, text = model.encode_video(face, context), model.encode_text()

    assert logits.shape == (B, len(CLASSES))
    assert logits.abs().max() <= 100.0 + 1e-4
    assert torch.allclose(video.norm(dim=-1), torch.ones(B)) and torch.allclose(text.norm(dim=-1), torch.ones(4))
    assert torch.allclose(logits, 100.0 * F.cosine_similarity(video[:, None], text[None], dim=-1), atol=1e-4)


def test_face_only_and_context_only_streams(parts):
    for stream in ("face", "context"):
        model = caer(dataclasses.replace(parts, model=copy.deepcopy(parts.model)), streams=(stream,))
        assert model.projection.in_features == DIM and list(model.temporal) == [stream]
        with torch.no_grad():
            only = model(**{stream: clips()})
            other = "context" if stream == "face" else "face"
            ignored = model(**{stream: clips(), other: clips(seed=5)})  # the unused stream does not matter
        assert only.shape == (B, len(CLASSES)) and torch.equal(only, ignored)


def test_missing_stream_is_an_error(parts):
    model = caer(parts)
    with pytest.raises(ModelError, match="'context' clip"):
        model(face=clips())
    with pytest.raises(ModelError, match="streams="):
        caer(parts, streams=("face", "body"))


def test_single_pass_encoder_matches_two_passes(parts):
    model = caer(parts)
    face, context = clips(seed=1), clips(frames=3, seed=2)  # streams may differ in length
    with torch.no_grad():
        one_pass = model.encode_video(face, context)
        summaries = [model.temporal[name](model.image_encoder(clip.flatten(0, 1)).unflatten(0, clip.shape[:2]))
                     for name, clip in (("face", face), ("context", context))]
        two_passes = F.normalize(model.projection(torch.cat(summaries, dim=-1)), dim=-1)
    assert torch.allclose(one_pass, two_passes, atol=1e-5)


def test_text_encoder_frozen_and_prompt_trainable(parts):
    model = caer(parts).train()
    F.cross_entropy(model(face=clips(), context=clips(seed=1)), torch.tensor([0, 2])).backward()

    assert all(not p.requires_grad and p.grad is None for p in model.text_encoder.parameters())
    assert model.prompt_learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.image_encoder.parameters())
    assert model.prompt_learner.token_suffix.requires_grad is False


def test_param_groups_partition_trainable_params(parts):
    model = caer(parts)
    groups = model.param_groups()
    assert list(groups) == ["temporal", "image_encoder", "prompt", "projection"]
    grouped = [id(p) for params in groups.values() for p in params]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) and set(grouped) == trainable
    assert all(groups.values())

    frozen = caer(parts, freeze_image_encoder=True, learnable_ctx=False).param_groups()
    assert frozen["image_encoder"] == [] and frozen["prompt"] == [] and frozen["temporal"]


def smooth_clips(seed):
    # Four clips with distinct low-frequency images (white noise gives near-identical features in a random ViT).
    generator = torch.Generator().manual_seed(seed)
    images = F.interpolate(torch.randn(4, 3, 6, 6, generator=generator), size=SIZE, mode="bilinear")
    return images[:, None] + 0.1 * torch.randn(4, T, 3, SIZE, SIZE, generator=generator)


def test_clip_caer_state_dict_restores_the_model_built_on_another_clip(parts):
    trained = caer(parts)
    with torch.no_grad():
        trained.prompt_learner.ctx.add_(1.0)
        trained.image_encoder.proj.mul_(2.0)
    torch.manual_seed(7)
    fresh = caer(create_clip("affectlab-tiny"))

    state = trained.state_dict()
    assert {key.split(".")[0] for key in state} == {"image_encoder", "prompt_learner", "text_encoder", "temporal",
                                                    "projection"}  # each CLIP weight is stored once
    fresh.load_state_dict(state)
    face, context = clips(seed=1), clips(seed=2)
    with torch.no_grad():
        assert torch.equal(fresh(face=face, context=context), trained(face=face, context=context))


def test_overfit_tiny_batch(parts):
    model = caer(parts).train()
    face, context, labels = smooth_clips(seed=1), smooth_clips(seed=2), torch.tensor([0, 1, 2, 3])
    groups = model.param_groups()
    optimizer = torch.optim.Adam([
        {"params": groups["temporal"], "lr": 3e-4}, {"params": groups["image_encoder"], "lr": 3e-5},
        {"params": groups["prompt"], "lr": 3e-4}, {"params": groups["projection"], "lr": 3e-4},
    ])
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(face=face, context=context), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0] and losses[-1] < 0.5 * math.log(4), losses


def test_clip_weights_that_cannot_be_downloaded_are_one_model_error(tmp_path, monkeypatch):
    """Offline, with nothing in the Hugging Face cache (an empty one here), a tag is one clear error, not a traceback
    from open_clip; raer's data.root is checked before that (tests/test_raer_options.py)."""
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match=r"^the 'openai' weights of 'ViT-B-32' could not be downloaded .*local weights"):
        create_clip("ViT-B-32", "openai")
