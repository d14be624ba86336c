"""The paper's other experiments, run after the probes on rank 0 with the model's LM head: the zero-shot prompting
baseline, malleability (replies under three system prompts, their emotion judged) and persistence (an offset-aware
probe along a reply)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from affectlab.datasets.emotion_corpus import EMOTIONS, EmotionCorpus
from affectlab.lab.config import ConfigError
from affectlab.lab.probing.data import model_source
from affectlab.probing import (
    ExtractionError,
    HiddenStateExtractor,
    LayerProbes,
    OffsetProbe,
    accuracy_by_offset,
    classifier_judge,
    fit_offset_probe,
    generate_answers,
    generate_replies,
    llm_judge,
    load_model,
    malleability,
    parse_emotion,
    plot_accuracy_by_offset,
    probe_judge,
    reply_states,
    score_answers,
)


def malleability_study(
    cfg: DictConfig, lm: tuple, test: EmotionCorpus, probes: LayerProbes, layers: Sequence[int], position: int,
    folder: Path,
) -> tuple[dict[str, float], Path]:
    """Replies to test texts under each system prompt, judged by the best layer's probe (``malleability.judge=probe``)
    or by the model asked zero-shot (``llm``); per-class recall and precision against the user text's emotion."""
    model, tokenizer = lm
    if cfg.malleability.judge == "probe":
        extractor = HiddenStateExtractor(
            model, tokenizer, list(layers), pooling=cfg.model.pooling,
            input_format=cfg.model.input_format, max_length=cfg.model.max_length,
        )
        judge = probe_judge(extractor, probes, position)
    elif cfg.malleability.judge == "llm":
        judge = llm_judge(model, tokenizer, EMOTIONS)
    elif cfg.malleability.judge == "classifier":
        judge = text_classifier_judge(cfg, str(cfg.malleability.classifier))
    else:
        raise ConfigError(f"malleability.judge={cfg.malleability.judge!r}: expected 'probe', 'classifier' or 'llm'")
    count = min(len(test), int(cfg.malleability.max_texts))
    results = malleability(model, tokenizer, test.texts[:count], test.labels[:count], judge, len(EMOTIONS),
                           max_new_tokens=cfg.malleability.max_new_tokens)
    path = folder / "malleability.csv"
    metrics = {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["system_prompt", "emotion", "recall", "precision"])
        for prompt, result in results.items():
            for name, recall, precision in zip(EMOTIONS, result.recall, result.precision):
                writer.writerow([prompt, name, f"{recall:.4f}", f"{precision:.4f}"])
            metrics[f"malleability/{prompt}/mean_recall"] = float(torch.tensor(result.recall).nanmean())
    return metrics, path


def text_classifier_judge(cfg: DictConfig, name: str):
    """``malleability.judge=classifier``: a transformers emotion classifier (hub id or folder) judges the replies."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_source(name))
        model = AutoModelForSequenceClassification.from_pretrained(model_source(name)).eval()
    except Exception as error:  # offline, unknown id, not a classifier: say which and why
        raise ConfigError(f"malleability.classifier={name!r} cannot be loaded: {type(error).__name__}: {error}. "
                          "Expected a reachable or cached hub id, or a local folder of a sequence classifier") from error
    try:
        return classifier_judge(model, tokenizer, EMOTIONS)
    except ValueError as error:
        raise ConfigError(f"malleability.classifier: {error}") from error


def persistence_study(
    cfg: DictConfig, lm: tuple, train: EmotionCorpus, test: EmotionCorpus, folder: Path
) -> tuple[dict[str, float], list[Path]]:
    """An offset-aware probe on the replies' hidden states at ``persistence.layer`` (a depth fraction), trained on
    random positions of replies to training texts, read at positions 0..``max_position`` of replies to test texts."""
    model, tokenizer = lm
    p = cfg.persistence
    extractor = HiddenStateExtractor(model, tokenizer, [float(p.layer)])
    unique_train = list(dict.fromkeys(zip(train.texts, train.labels)))[: int(p.train_texts)]
    parts = {}
    for part, pairs in (("train", unique_train), ("test", list(zip(test.texts, test.labels))[: int(p.test_texts)])):
        texts, labels = [t for t, _ in pairs], [y for _, y in pairs]
        replies = generate_replies(model, tokenizer, texts, max_new_tokens=p.max_new_tokens)
        parts[part] = (reply_states(extractor, replies), labels)
    probe = OffsetProbe(model.config.hidden_size, len(EMOTIONS), max_offset=p.max_offset)
    fit_offset_probe(probe, *parts["train"], per_reply=p.per_reply, epochs=p.epochs, lr=cfg.probe.optim.lr)
    curve = accuracy_by_offset(probe, *parts["test"], range(0, int(p.max_position) + 1, int(p.positions_step)))
    table = folder / "persistence.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["position", "accuracy", "replies"])
        writer.writerows([k, f"{accuracy:.4f}", count] for k, (accuracy, count) in curve.items())
    figure = plot_accuracy_by_offset(curve, folder / "persistence.png", chance=1.0 / len(EMOTIONS),
                                     title=f"{cfg.model.name}, layer {extractor.layers[0]}")
    metrics = {f"persistence/accuracy_at_{k:03d}": a for k, (a, n) in curve.items() if n > 0}
    return metrics, [table, figure]


def generative_model(cfg: DictConfig, stage: str):
    """``(model with its LM head, tokenizer)`` for the stages that generate; a ConfigError for a model that cannot."""
    name = str(cfg.model.name)
    use_gpu = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    try:
        return load_model(
            model_source(name), revision=cfg.model.revision, device="cuda" if use_gpu else "cpu", causal_lm=True
        )
    except ExtractionError as error:
        raise ConfigError(f"{stage}.enabled=true needs a generative model; model.name={name!r}: {error}") from error


def zero_shot_baseline(cfg: DictConfig, lm: tuple, test: EmotionCorpus) -> dict[str, float]:
    """The paper's prompting baseline on (at most ``zero_shot.max_texts`` of) the balanced test set."""
    model, tokenizer = lm
    count = min(len(test), int(cfg.zero_shot.max_texts))
    answers = generate_answers(model, tokenizer, test.texts[:count], EMOTIONS,
                               max_new_tokens=cfg.zero_shot.max_new_tokens)
    result = score_answers([parse_emotion(a, EMOTIONS) for a in answers], test.emotions[:count])
    return {"zero_shot_accuracy": result.accuracy, "zero_shot_coverage": result.coverage,
            "zero_shot_texts": float(result.total)}
