"""Zero-shot prompting baseline: the model is asked for a JSON object naming one emotion, and its answer parsed.

Accuracy is over the valid (parseable) answers only, and coverage is the share of answers that were valid, as in
"Decoding Emotion in the Deep".
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch

PROMPT = (
    "Classify the emotion expressed in the text below as exactly one of: {classes}.\n"
    'Answer only with a JSON object such as {{"emotion": "{example}"}}.\n\n'
    "Text: {text}"
)
_OBJECT = re.compile(r"\{[^{}]*\}")


def zero_shot_prompt(text: str, classes: Sequence[str]) -> str:
    return PROMPT.format(classes=", ".join(classes), example=classes[0], text=text)


def parse_emotion(answer: str, classes: Sequence[str]) -> str | None:
    """The class an answer names, or None. Tolerant: the first JSON object anywhere in the answer (key ``emotion``,
    else its only value), single quotes, any case; failing that, the answer is valid if it names exactly one class
    as a whole word."""
    lookup = {name.lower(): name for name in classes}
    for match in _OBJECT.finditer(answer):
        raw = match.group()
        for candidate in (raw, raw.replace("'", '"')):
            try:
                obj = json.loads(candidate)
            except json.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            value = obj.get("emotion", obj.get("Emotion", next(iter(obj.values())) if len(obj) == 1 else None))
            if isinstance(value, str) and value.strip().lower() in lookup:
                return lookup[value.strip().lower()]
    named = {name for name in lookup if re.search(rf"\b{re.escape(name)}\b", answer.lower())}
    return lookup[named.pop()] if len(named) == 1 else None


@dataclass(frozen=True)
class ZeroShotResult:
    accuracy: float  # correct / valid answers
    coverage: float  # valid answers / all answers
    valid: int
    total: int


def score_answers(predicted: Sequence[str | None], truth: Sequence[str]) -> ZeroShotResult:
    valid = [(p, t) for p, t in zip(predicted, truth) if p is not None]
    correct = sum(p == t for p, t in valid)
    return ZeroShotResult(
        accuracy=correct / len(valid) if valid else 0.0,
        coverage=len(valid) / len(predicted) if predicted else 0.0,
        valid=len(valid),
        total=len(predicted),
    )


@dataclass
class Replies:
    """Generated replies: their text, and per reply the full token ids (prompt + reply) and the prompt's length."""

    texts: list[str]
    ids: list[torch.Tensor]
    prompt_lengths: list[int]


@torch.inference_mode()
def generate_replies(
    model,
    tokenizer,
    user_texts: Sequence[str],
    *,
    system_prompt: str | None = None,
    max_new_tokens: int = 512,
    batch_size: int = 16,
) -> Replies:
    """Greedy replies of a causal LM to each user turn, through its chat template (with the system prompt, if any)
    when it has one, else to the bare text."""
    if system_prompt and not getattr(tokenizer, "chat_template", None):
        raise ValueError("a system prompt needs a chat model: the tokenizer has no chat template")
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = list(user_texts)
    if getattr(tokenizer, "chat_template", None):
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        prompts = [
            tokenizer.apply_chat_template(system + [{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True)
            for p in prompts
        ]
    replies = Replies([], [], [])
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True,
                          add_special_tokens=not getattr(tokenizer, "chat_template", None)).to(device)
        output = model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        width = batch["input_ids"].shape[1]
        for row, mask in zip(output, batch["attention_mask"]):
            reply = row[width:]
            if tokenizer.eos_token_id is not None and (reply == tokenizer.eos_token_id).any():
                reply = reply[: int((reply == tokenizer.eos_token_id).nonzero()[0])]
            prompt = row[:width][mask.bool()]
            replies.texts.append(tokenizer.decode(reply, skip_special_tokens=True))
            replies.ids.append(torch.cat([prompt, reply]).cpu())
            replies.prompt_lengths.append(len(prompt))
    return replies


def generate_answers(
    model, tokenizer, texts: Sequence[str], classes: Sequence[str], *, max_new_tokens: int = 24, batch_size: int = 16
) -> list[str]:
    """Greedy answers of a causal LM to the zero-shot prompt."""
    prompts = [zero_shot_prompt(text, classes) for text in texts]
    return generate_replies(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size).texts
