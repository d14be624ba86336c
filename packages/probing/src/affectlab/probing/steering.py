"""Steering a causal language model along an emotion direction, read through its zero-shot emotion answer.

`steering` adds ``alpha × direction`` to the output of one block through a forward hook, for the duration of a
``with`` block (the hook is removed on leaving it, error or not). `emotion_answers` asks the zero-shot question
(`zero_shot.zero_shot_prompt`), starts the model's answer with ``{"emotion": "`` and reads the next-token
probability of each emotion word's first token: their distribution over the emotions, and how much of the
next-token probability they hold. Steering towards an emotion should move that distribution towards it.

With real weights (a GPU helps; CPU works for 0.6B)::

    from affectlab.datasets.emotion_corpus import EMOTIONS, read_meld
    from affectlab.probing import (HiddenStateExtractor, cached_features, emotion_answers, emotion_directions,
                                   load_model, steering)

    model, tokenizer = load_model("Qwen/Qwen3-0.6B", causal_lm=True)  # or meta-llama/Llama-3.2-1B-Instruct
    corpus = read_meld(["train_sent_emo.csv"])
    extractor = HiddenStateExtractor(model, tokenizer, "all", input_format="chat")  # pooling auto: the last token
    features, _, _ = cached_features(extractor, corpus.texts, model="Qwen/Qwen3-0.6B")
    directions = emotion_directions(features, torch.tensor(corpus.labels), len(EMOTIONS))  # [29, 7, 1024]
    layer = 14  # a middle layer: hidden_states[14], the output of block 14
    joy = directions[extractor.layers.index(layer), EMOTIONS.index("joy")]
    texts = ["The train is late again.", "We got the flat!"]
    for alpha in (0.0, 2.0, 4.0, 8.0):
        with steering(model, layer, joy, alpha):
            answers = emotion_answers(model, tokenizer, texts, EMOTIONS)
        print(alpha, answers.distribution[:, EMOTIONS.index("joy")], answers.mass)

The directions are differences of class means, so ``alpha = 1`` moves a state by one class-to-rest distance; the
answer's share of joy should rise with alpha while ``mass`` (the probability that the answer is an emotion word at
all) stays high; a collapsing mass means the model is pushed off its language. Layer ``k`` follows the extractor:
0 steers the embeddings (the input of block 1), ``k`` the output of block ``k``; at the last layer that output is
the residual stream before the final norm. Qwen3's chat template is rendered with ``enable_thinking=False`` so that
the answer starts at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from affectlab.probing.extract import find_blocks
from affectlab.probing.metrics import Progress
from affectlab.probing.zero_shot import zero_shot_prompt

ANSWER_PREFIX = '{"emotion": "'


class SteeringError(ValueError):
    """A layer, direction or class list that cannot steer or be read; the message names it and what was expected."""


@contextmanager
def steering(model: nn.Module, layer: int, direction: torch.Tensor, alpha: float = 1.0):
    """Within the ``with`` block, ``alpha × direction`` ([hidden]) is added at every position to layer ``layer``'s
    hidden states (0: the embeddings; k ≥ 1: the output of block k), so every block above sees the shifted states."""
    blocks = find_blocks(model)
    hidden = model.config.hidden_size
    if not 0 <= layer <= len(blocks):
        raise SteeringError(f"layer={layer}: the model has layers 0..{len(blocks)} (0 = embeddings)")
    direction = torch.as_tensor(direction)
    if direction.shape != (hidden,):
        raise SteeringError(f"direction of shape {tuple(direction.shape)}: expected [{hidden}] (the hidden size)")

    def shifted(states: torch.Tensor) -> torch.Tensor:
        return states + alpha * direction.to(device=states.device, dtype=states.dtype)

    def before_first_block(module, args, kwargs):
        if args:
            return (shifted(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": shifted(kwargs["hidden_states"])}

    def after_block(module, args, output):
        if isinstance(output, (tuple, list)):
            return type(output)([shifted(output[0]), *output[1:]])
        return shifted(output)

    # first among the block's hooks, so that hooks recording its output (transformers' output_hidden_states) see it
    if layer == 0:
        handle = blocks[0].register_forward_pre_hook(before_first_block, with_kwargs=True, prepend=True)
    else:
        handle = blocks[layer - 1].register_forward_hook(after_block, prepend=True)
    try:
        yield
    finally:
        handle.remove()


def answer_prompt(tokenizer, text: str, classes: Sequence[str]) -> str:
    """The zero-shot question about ``text`` (as the user turn of the chat template, when the tokenizer has one)
    followed by the start of the answer, ``{"emotion": "``."""
    question = zero_shot_prompt(text, classes)
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                               add_generation_prompt=True, enable_thinking=False)
    else:
        prompt = question + "\n\n"
    return prompt + ANSWER_PREFIX


def answer_tokens(tokenizer, prompt: str, classes: Sequence[str]) -> list[tuple[tuple[int, ...], int]]:
    """Per class, ``(context ids, first token id)``: where the tokenisation of ``prompt + class`` leaves that of
    ``prompt``, and the token there. The context is usually the whole prompt; it is shorter when the prompt's last
    characters merge with the word (BPE merging the quote into ``"joy``)."""
    special = not getattr(tokenizer, "chat_template", None)
    base = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    out = []
    for name in classes:
        full = tokenizer(prompt + name, add_special_tokens=special)["input_ids"]
        shared = next((i for i, (a, b) in enumerate(zip(base, full)) if a != b), min(len(base), len(full)))
        if shared >= len(full):
            raise SteeringError(f"class {name!r}: the tokenizer gives it no token after the prompt")
        out.append((tuple(full[:shared]), full[shared]))
    seen: dict[tuple[tuple[int, ...], int], str] = {}
    for name, key in zip(classes, out):
        if key in seen:
            raise SteeringError(
                f"classes {seen[key]!r} and {name!r} start with the same token "
                f"({tokenizer.convert_ids_to_tokens(key[1])!r}): their answers cannot be told apart by it"
            )
        seen[key] = name
    return out


@dataclass
class EmotionAnswers:
    """Per text: the zero-shot answer's distribution over the classes ``[N, C]`` (each class's first-token
    probability, renormalised over the classes), and ``mass`` ``[N]``, their total next-token probability."""

    distribution: torch.Tensor
    mass: torch.Tensor


@torch.no_grad()
def emotion_answers(
    model: nn.Module, tokenizer, texts: Sequence[str], classes: Sequence[str], *, progress: Progress | None = None
) -> EmotionAnswers:
    """The zero-shot emotion answer of a causal LM (with its LM head) to each text, as probabilities of the classes'
    first tokens after ``{"emotion": "`` (one forward pass per text, or per distinct context: `answer_tokens`)."""
    device = next(model.parameters()).device
    probabilities = torch.zeros(len(texts), len(classes))
    for row, text in enumerate(texts):
        targets = answer_tokens(tokenizer, answer_prompt(tokenizer, text, classes), classes)
        for context in dict.fromkeys(context for context, _ in targets):
            ids = torch.tensor([context], device=device)
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
            next_token = logits.softmax(-1).cpu()
            for column, (other, token) in enumerate(targets):
                if other == context:
                    probabilities[row, column] = next_token[token]
        if progress is not None:
            progress(row + 1, len(texts), "zero-shot emotion answers")
    mass = probabilities.sum(1)
    return EmotionAnswers(probabilities / mass.clamp(min=1e-30).unsqueeze(1), mass)


@dataclass
class SteeringSweep:
    """`emotion_answers` under ``alphas[i] × direction`` at one layer: ``distribution [A, N, C]``, ``mass [A, N]``."""

    alphas: list[float]
    distribution: torch.Tensor
    mass: torch.Tensor


def steering_sweep(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    classes: Sequence[str],
    layer: int,
    direction: torch.Tensor,
    alphas: Sequence[float] = (0.0, 1.0, 2.0, 4.0, 8.0),
    *,
    progress: Progress | None = None,
) -> SteeringSweep:
    """The zero-shot answers to ``texts`` without steering (alpha 0) and steered by each alpha."""
    answers = []
    for index, alpha in enumerate(alphas):
        with steering(model, layer, direction, alpha):
            answers.append(emotion_answers(model, tokenizer, texts, classes))
        if progress is not None:
            progress(index + 1, len(alphas), f"steering at layer {layer}, alpha={alpha:g}")
    return SteeringSweep(list(alphas), torch.stack([a.distribution for a in answers]),
                         torch.stack([a.mass for a in answers]))
