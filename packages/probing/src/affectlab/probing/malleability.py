"""Malleability: does a system prompt change the emotion of the model's replies to emotional user texts?

"Decoding Emotion in the Deep" generates replies (up to 512 tokens) under three system prompts and judges each
reply's emotion; per class, recall and precision of the judged reply emotion against the user text's emotion say
how much the reply mirrors the user. The judge is any callable from reply texts to class indices: a trained layer
probe on the reply's hidden states (`probe_judge`), a text classifier, or an LLM asked zero-shot (`llm_judge`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from affectlab.probing.extract import HiddenStateExtractor
from affectlab.probing.probes import LayerProbes, predict
from affectlab.probing.zero_shot import generate_answers, generate_replies, parse_emotion

SYSTEM_PROMPTS: dict[str, str | None] = {
    "none": None,
    "emotional": "You are very emotional.",
    "calm": "You always remain calm and composed.",
}

Judge = Callable[[Sequence[str]], list[int | None]]


@dataclass(frozen=True)
class ClassAgreement:
    recall: list[float]  # per class: of the user texts of this class, the share of replies judged this class
    precision: list[float]  # per class: of the replies judged this class, the share whose user text was this class
    judged: int  # replies the judge gave a class to


def agreement(judged: Sequence[int | None], truth: Sequence[int], num_classes: int) -> ClassAgreement:
    """Per-class recall and precision of the judged reply emotions against the user texts' emotions (replies the
    judge could not classify count as misses for recall)."""
    pairs = torch.tensor([(j if j is not None else -1, t) for j, t in zip(judged, truth)]).view(-1, 2)
    recall, precision = [], []
    for c in range(num_classes):
        true_c, judged_c = pairs[:, 1] == c, pairs[:, 0] == c
        hits = (true_c & judged_c).sum().item()
        recall.append(hits / true_c.sum().item() if true_c.any() else float("nan"))
        precision.append(hits / judged_c.sum().item() if judged_c.any() else float("nan"))
    return ClassAgreement(recall, precision, int((pairs[:, 0] >= 0).sum()))


def probe_judge(extractor: HiddenStateExtractor, probes: LayerProbes, layer_position: int = -1) -> Judge:
    """Judges a reply by a trained layer probe on the reply text's own pooled hidden states."""

    def judge(replies: Sequence[str]) -> list[int | None]:
        features = extractor([r if r.strip() else "." for r in replies])  # an empty reply still gets a judgement
        logits = predict(probes, features.to(next(probes.parameters()).device))
        return logits[layer_position].argmax(-1).tolist()

    return judge


def llm_judge(model, tokenizer, classes: Sequence[str], max_new_tokens: int = 24) -> Judge:
    """Judges a reply by asking a generative model the zero-shot question; unparseable answers give None."""

    def judge(replies: Sequence[str]) -> list[int | None]:
        answers = generate_answers(model, tokenizer, replies, classes, max_new_tokens=max_new_tokens)
        names = [parse_emotion(answer, classes) for answer in answers]
        return [classes.index(name) if name is not None else None for name in names]

    return judge


# Label names text classifiers commonly use for the 7 classes (e.g. the Ekman-style emotion classifiers on the hub)
CLASSIFIER_SYNONYMS = {"joy": ("joy", "happiness", "happy"), "anger": ("anger", "angry"), "sadness": ("sadness", "sad"),
                       "fear": ("fear", "afraid"), "disgust": ("disgust",), "surprise": ("surprise", "surprised"),
                       "neutral": ("neutral", "none", "no emotion")}


def classifier_class_map(id2label: Mapping[int, str], classes: Sequence[str], model_name: str = "") -> list[int]:
    """For each of a text classifier's output ids, the index of the class in ``classes`` it names; a ValueError
    naming the model and the label when one names none of them."""
    lookup = {}
    for index, name in enumerate(classes):
        for synonym in CLASSIFIER_SYNONYMS.get(name, (name,)):
            lookup[synonym] = index
    mapping = []
    for position in range(len(id2label)):
        label = str(id2label[position]).strip().lower()
        if label not in lookup:
            raise ValueError(
                f"text classifier {model_name!r}: its label {id2label[position]!r} (id {position}) names none of "
                f"{list(classes)}; expected a classifier of these emotions"
            )
        mapping.append(lookup[label])
    return mapping


def classifier_judge(model, tokenizer, classes: Sequence[str], batch_size: int = 32, max_length: int = 512) -> Judge:
    """Judges a reply by a transformers sequence classifier whose labels name the classes (by `classifier_class_map`);
    scores of labels that map to the same class are summed."""
    mapping = torch.tensor(classifier_class_map(model.config.id2label, classes, model.config.name_or_path))
    device = next(model.parameters()).device

    @torch.no_grad()
    def judge(replies: Sequence[str]) -> list[int | None]:
        out = []
        for start in range(0, len(replies), batch_size):
            chunk = [r if r.strip() else "." for r in replies[start : start + batch_size]]
            inputs = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            probs = model(**inputs.to(device)).logits.float().softmax(-1).cpu()
            per_class = torch.zeros(len(chunk), len(classes)).index_add_(1, mapping, probs)
            out.extend(per_class.argmax(-1).tolist())
        return out

    return judge


def malleability(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[int],
    judge: Judge,
    num_classes: int,
    *,
    system_prompts: Mapping[str, str | None] = SYSTEM_PROMPTS,
    max_new_tokens: int = 512,
    batch_size: int = 8,
) -> dict[str, ClassAgreement]:
    """For each system prompt: the replies to ``texts``, judged, against ``labels``."""
    results = {}
    for name, prompt in system_prompts.items():
        replies = generate_replies(
            model, tokenizer, texts, system_prompt=prompt, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        results[name] = agreement(judge(replies.texts), labels, num_classes)
    return results
