"""Hidden states of any Hugging Face model, pooled per text, at chosen layers, computing no layer above the deepest.

Layer ``k`` follows transformers' ``hidden_states[k]``: 0 is the embeddings (the input of the first block), ``k`` the
output of block ``k``, and the last layer is the model's ``last_hidden_state`` (after the final norm in decoders).
Forward hooks on the blocks copy out only the pooled vectors of the requested layers; the block after the deepest
one raises, so nothing above it runs and no full hidden-state tuple is ever built.
"""

from __future__ import annotations

import inspect
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

POOLINGS = ("last", "mean")  # what a cache records; "auto" resolves to one of them (`resolve_pooling`)
INPUT_FORMATS = ("raw", "instruction", "chat")
DEPTH_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


class ExtractionError(ValueError):
    """A model, tokenizer or option that cannot be used for extraction; the message names it and what was expected."""


class TruncationWarning(UserWarning):
    """Texts longer than the model's limit were cut; the count is in the extractor's ``stats``."""


class _ReachedDeepest(Exception):
    """Raised by the hook of the deepest requested layer to stop the forward pass there."""


def select_layers(num_layers: int, layers: str | Sequence[float | int] = "all") -> list[int]:
    """Layer indices 0..num_layers (0 = embeddings): ``"all"``, depth fractions (``[0, 0.25, 0.5, 0.75, 1]``) or
    indices (ints). A fraction f picks layer round(f × num_layers), halves rounded up."""
    if isinstance(layers, str):
        if layers != "all":
            raise ExtractionError(f"layers={layers!r}: expected 'all', depth fractions in [0, 1] or layer indices")
        return list(range(num_layers + 1))
    chosen = []
    for value in layers:
        if isinstance(value, float):
            if not 0.0 <= value <= 1.0:
                raise ExtractionError(f"layer depth fraction {value}: expected a float in [0, 1]")
            chosen.append(math.floor(value * num_layers + 0.5))
        elif isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= num_layers:
                raise ExtractionError(f"layer {value}: the model has layers 0..{num_layers} (0 = embeddings)")
            chosen.append(value)
        else:
            raise ExtractionError(f"layer {value!r}: expected a depth fraction (float) or a layer index (int)")
    if not chosen:
        raise ExtractionError("layers=[]: expected at least one layer")
    return sorted(set(chosen))


def is_decoder(model: nn.Module) -> bool:
    """Whether ``model`` attends causally (a decoder: GPT, LLaMA, Qwen3...) rather than both ways (BERT, MiniLM...).

    By its transformers model type: a type with a causal LM class and no masked LM class is a decoder; types with
    both (BERT, RoBERTa) are encoders unless their config says ``is_decoder``.
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    config = model.config
    if getattr(config, "is_decoder", False):
        return True
    kind = getattr(config, "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def resolve_pooling(model: nn.Module, pooling: str = "auto") -> str:
    """The pooling used for ``model``: ``last`` or ``mean`` as asked, or for ``auto`` ``mean`` over the tokens of an
    encoder (its last token is [SEP], which holds little of the text at the lower layers) and the ``last`` non-pad
    token of a decoder (the only one that has seen the whole text)."""
    if pooling == "auto":
        return "last" if is_decoder(model) else "mean"
    if pooling not in POOLINGS:
        raise ExtractionError(f"pooling={pooling!r}: expected 'auto' or one of {POOLINGS}")
    return pooling


def load_model(
    name: str, *, revision: str | None = None, device: str | torch.device = "cpu", dtype=None, causal_lm: bool = False
):
    """``(model, tokenizer)`` from a hub id or local folder; bf16 on GPU, fp32 on CPU unless ``dtype`` says otherwise.
    The bare model (no head) for extraction; with ``causal_lm`` the model with its LM head, to generate."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
        loader = AutoModelForCausalLM if causal_lm else AutoModel
        model = loader.from_pretrained(name, revision=revision, dtype=dtype)
    except Exception as error:  # offline, unknown id, no weights: say which model and why
        raise ExtractionError(
            f"model {name!r} (revision {revision!r}) cannot be loaded: {type(error).__name__}: {error}. "
            "Expected a Hugging Face model id that is reachable or cached, or a local model folder."
        ) from error
    return model.to(device).eval(), tokenizer


def model_revision(model: nn.Module, revision: str | None = None) -> str:
    """The revision a cache records: the one asked for, else the hub commit transformers saw, else ``local``."""
    return revision or getattr(getattr(model, "config", None), "_commit_hash", None) or "local"


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's stack of transformer blocks: the first ModuleList as long as ``config.num_hidden_layers``."""
    count = model.config.num_hidden_layers
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ExtractionError(
        f"{type(model).__name__}: no ModuleList of {count} blocks (config.num_hidden_layers); "
        "expected a transformers model with a stack of layers"
    )


@dataclass
class ExtractionStats:
    texts: int = 0
    tokens: int = 0  # non-padding tokens that went through the model
    padded_tokens: int = 0  # tokens including padding
    truncated: int = 0
    batches: int = 0
    seconds: float = 0.0


class HiddenStateExtractor:
    """Pooled hidden states ``[len(layers), N, hidden]`` (float32, CPU) of ``texts`` under one model.

    ``input_format``: ``raw`` (the text as is, for a pre-trained model), ``instruction`` (the text as is, given to an
    instruction-tuned model: its tokenizer must have a chat template), ``chat`` (the text as the user turn of the chat
    template, ending with the assistant's header). ``pooling``: ``last`` (the last non-padding token, the paper's),
    ``mean`` (over non-padding tokens) or ``auto`` (mean for encoders, last for decoders: `resolve_pooling`); the
    attribute ``pooling`` holds the resolved one (log it). Batches hold texts of similar length and at most
    ``batch_tokens`` tokens.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        layers: str | Sequence[float | int] = "all",
        *,
        pooling: str = "auto",
        input_format: str = "raw",
        max_length: int | None = None,
        batch_size: int = 64,
        batch_tokens: int = 4096,
    ):
        if input_format not in INPUT_FORMATS:
            raise ExtractionError(f"input_format={input_format!r}: expected one of {INPUT_FORMATS}")
        if input_format in ("instruction", "chat") and not getattr(tokenizer, "chat_template", None):
            raise ExtractionError(
                f"input_format={input_format!r} needs an instruction-tuned model whose tokenizer has a chat template; "
                f"{getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)!r} has none (use input_format='raw')"
            )
        self.model = getattr(model, "base_model", model).eval()  # no LM head: it is never needed
        self.tokenizer = tokenizer
        self.num_layers = self.model.config.num_hidden_layers
        self.layers = select_layers(self.num_layers, layers)
        self.pooling, self.input_format = resolve_pooling(self.model, pooling), input_format
        self.max_length = max_length or self._model_limit()
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        self.blocks = find_blocks(self.model)
        accepted = inspect.signature(self.model.forward).parameters
        self.takes_position_ids, self.takes_use_cache = "position_ids" in accepted, "use_cache" in accepted
        # decoder tokenizers often have no padding token; any id will do, padding is masked
        self.pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
        self.stats = ExtractionStats()

    def _model_limit(self) -> int:
        """The smaller of the model's positions and the tokenizer's limit (tokenizers without one say ~1e30)."""
        limits = [getattr(self.model.config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        limits = [int(limit) for limit in limits if limit and limit < 10**9]
        return min(limits) if limits else 2048

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text in the chosen input format, cut to ``max_length`` (cuts counted in ``stats``)."""
        if self.input_format == "chat":
            prompts = [
                self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
                )
                for text in texts
            ]
            ids = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        else:
            ids = self.tokenizer(list(texts))["input_ids"]
        cut = sum(len(row) > self.max_length for row in ids)
        if cut:
            self.stats.truncated += cut
            warnings.warn(
                f"{cut} of {len(ids)} texts are longer than {self.max_length} tokens and were truncated",
                TruncationWarning,
                stacklevel=3,
            )
        # keep the end of a chat prompt (the assistant header the last token pools), the start of a raw text
        return [row[-self.max_length :] if self.input_format == "chat" else row[: self.max_length] for row in ids]

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped by length (longest first), each batch under ``batch_size`` texts and ``batch_tokens``."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        groups, current = [], []
        for index in order:
            width = lengths[current[0]] if current else lengths[index]
            if current and (len(current) >= self.batch_size or width * (len(current) + 1) > self.batch_tokens):
                groups.append(current)
                current = []
            current.append(index)
        if current:
            groups.append(current)
        return groups

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        start = time.perf_counter()
        ids = self.encode(texts)
        hidden = self.model.config.hidden_size
        out = torch.empty(len(self.layers), len(ids), hidden, dtype=torch.float32)
        for group in self.batches([len(row) for row in ids]):
            pooled = self.forward_pooled([ids[i] for i in group])
            out[:, group] = pooled.float().cpu()
        self.stats.texts += len(ids)
        self.stats.seconds += time.perf_counter() - start
        return out

    def forward_pooled(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """One batch: ``[len(layers), B, hidden]`` pooled, padding on the tokenizer's side."""
        width = max(len(row) for row in rows)
        pad = self.pad_id
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            input_ids[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        self.stats.tokens += int(mask.sum())
        self.stats.padded_tokens += mask.numel()
        self.stats.batches += 1
        return self._run(input_ids, mask, self._pool)

    @torch.inference_mode()
    def token_states(self, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Every token's hidden states ``[len(layers), len(ids), hidden]`` of one unpadded sequence (no pooling)."""
        input_ids = torch.as_tensor(ids, dtype=torch.long, device=self.device).unsqueeze(0)
        states = self._run(input_ids, torch.ones_like(input_ids), lambda states, mask: states)
        return states[:, 0].float().cpu()

    def _pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            keep = mask.unsqueeze(-1).bool()  # where, not multiply: a padded position may hold NaN
            return torch.where(keep, states, 0.0).sum(1) / keep.sum(1).clamp(min=1)
        # the last position holding a real token, whichever side the padding is on
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
        return states[torch.arange(states.shape[0], device=states.device), last]

    def _run(self, input_ids: torch.Tensor, mask: torch.Tensor, reduce) -> torch.Tensor:
        """``reduce(states [B, T, hidden], mask)`` of every requested layer, stacked; stops after the deepest."""
        captured: dict[int, torch.Tensor] = {}
        deepest = self.layers[-1]
        wanted = set(self.layers)
        handles = []

        def capture_input(module, args, kwargs):
            states = args[0] if args else kwargs["hidden_states"]
            captured[0] = reduce(states, mask)
            if deepest == 0:
                raise _ReachedDeepest

        def capture_output(layer: int):
            def hook(module, args, output):
                states = output[0] if isinstance(output, (tuple, list)) else output
                captured[layer] = reduce(states, mask)
                if layer == deepest:
                    raise _ReachedDeepest

            return hook

        if 0 in wanted:
            handles.append(self.blocks[0].register_forward_pre_hook(capture_input, with_kwargs=True))
        for layer in wanted - {0, self.num_layers}:
            handles.append(self.blocks[layer - 1].register_forward_hook(capture_output(layer)))
        kwargs = {"input_ids": input_ids, "attention_mask": mask}
        if self.takes_position_ids:  # positions count real tokens only, so left padding changes nothing
            kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
        if self.takes_use_cache:
            kwargs["use_cache"] = False  # no key-value cache to build: nothing is generated
        try:
            output = self.model(**kwargs)
            captured[self.num_layers] = reduce(output.last_hidden_state, mask)
        except _ReachedDeepest:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return torch.stack([captured[layer] for layer in self.layers])

