"""The studies run after the probes on rank 0: the paper's zero-shot prompting baseline, malleability (replies under
three system prompts, their emotion judged) and persistence (an offset-aware probe along a reply), which need the
model with its LM head; per-token emotion trajectories of given texts along the emotion directions; and steering a
causal LM along an emotion's direction, read through its zero-shot answer."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from affectlab.datasets.emotion_corpus import EmotionCorpus
from affectlab.lab.config import ConfigError
from affectlab.lab.probing.data import build_extractor, model_source
from affectlab.probing import (
    ExtractionError,
    HiddenStateExtractor,
    LayerProbes,
    OffsetProbe,
    ProjectionClassifier,
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
    plot_token_trajectory,
    print_progress,
    probe_judge,
    reply_states,
    score_answers,
    select_layers,
    steering_sweep,
    token_trajectory,
)


def malleability_study(
    cfg: DictConfig, lm: tuple, test: EmotionCorpus, probes: LayerProbes, layers: Sequence[int], position: int,
    folder: Path,
) -> tuple[dict[str, float], Path]:
    """Replies to test texts under each system prompt, judged by the best layer's probe (``malleability.judge=probe``)
    or by the model asked zero-shot (``llm``); per-class recall and precision against the user text's emotion."""
    model, tokenizer = lm
    classes = list(test.classes)
    if cfg.malleability.judge == "probe":
        judge = probe_judge(build_extractor(cfg.model, model, tokenizer, layers=list(layers)), probes, position)
    elif cfg.malleability.judge == "llm":
        judge = llm_judge(model, tokenizer, classes)
    else:
        judge = text_classifier_judge(str(cfg.malleability.classifier), classes)
    count = min(len(test), int(cfg.malleability.max_texts))
    results = malleability(model, tokenizer, test.texts[:count], test.labels[:count], judge, len(classes),
                           max_new_tokens=cfg.malleability.max_new_tokens)
    path = folder / "malleability.csv"
    metrics = {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["system_prompt", "emotion", "recall", "precision"])
        for prompt, result in results.items():
            for name, recall, precision in zip(classes, result.recall, result.precision):
                writer.writerow([prompt, name, f"{recall:.4f}", f"{precision:.4f}"])
            metrics[f"malleability/{prompt}/mean_recall"] = float(torch.tensor(result.recall).nanmean())
    return metrics, path


def text_classifier_judge(name: str, classes: Sequence[str]):
    """``malleability.judge=classifier``: a transformers emotion classifier (hub id or folder) judges the replies."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_source(name))
        model = AutoModelForSequenceClassification.from_pretrained(model_source(name)).eval()
    except Exception as error:  # offline, unknown id, not a classifier: say which and why
        raise ConfigError(f"malleability.classifier={name!r} cannot be loaded: {type(error).__name__}: {error}. "
                          "Expected a reachable or cached hub id, or a local folder of a sequence classifier"
                          ) from error
    try:
        return classifier_judge(model, tokenizer, classes)
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
    probe = OffsetProbe(model.config.hidden_size, len(test.classes), max_offset=p.max_offset)
    fit_offset_probe(probe, *parts["train"], per_reply=p.per_reply, epochs=p.epochs, lr=p.lr)
    curve = accuracy_by_offset(probe, *parts["test"], range(0, int(p.max_position) + 1, int(p.positions_step)))
    table = folder / "persistence.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["position", "accuracy", "replies"])
        writer.writerows([k, f"{accuracy:.4f}", count] for k, (accuracy, count) in curve.items())
    figure = plot_accuracy_by_offset(curve, folder / "persistence.png", chance=1.0 / len(test.classes),
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
    """The paper's prompting baseline on (at most ``zero_shot.max_texts`` of) the test set."""
    model, tokenizer = lm
    count = min(len(test), int(cfg.zero_shot.max_texts))
    answers = generate_answers(model, tokenizer, test.texts[:count], list(test.classes),
                               max_new_tokens=cfg.zero_shot.max_new_tokens)
    result = score_answers([parse_emotion(a, list(test.classes)) for a in answers], test.emotions[:count])
    return {"zero_shot_accuracy": result.accuracy, "zero_shot_coverage": result.coverage,
            "zero_shot_texts": float(result.total)}


def trajectories(cfg: DictConfig, extractor: HiddenStateExtractor, projection: ProjectionClassifier,
                 classes: Sequence[str], layer: int, folder: Path) -> list[Path]:
    """Every token of each ``directions.trajectory_texts`` projected on the emotion directions at ``layer``: a CSV
    (a row per token, a column per class) and a figure per text."""
    paths = []
    for index, text in enumerate(cfg.directions.trajectory_texts):
        trajectory = token_trajectory(extractor, str(text), projection, classes, layer=layer, kind="projection")
        stem = folder / f"trajectory_{index:02d}"
        paths.append(trajectory.write_csv(stem.with_suffix(".csv")))
        paths.append(plot_token_trajectory(trajectory, stem.with_suffix(".png"),
                                           title=f"layer {layer}, projections on the emotion directions: "
                                                 f"{str(text)[:50]}"))
    return paths


def steering_study(cfg: DictConfig, lm: tuple, directions: torch.Tensor, layers: Sequence[int], num_layers: int,
                   classes: Sequence[str], texts: Sequence[str], folder: Path) -> tuple[dict[str, float], list[Path]]:
    """``steering.emotion``'s direction (difference of class means of the hidden states, ``directions [L, C, H]``)
    added at the extracted layer nearest ``steering.layer`` × each alpha: the zero-shot answer's distribution over
    the classes, per text (CSV) and averaged over the texts (figure)."""
    spec = cfg.steering
    if spec.emotion not in classes:
        raise ConfigError(f"steering.emotion={spec.emotion!r}: not a class of this corpus; expected one of "
                          f"{list(classes)}")
    target = select_layers(num_layers, [float(spec.layer)])[0]  # rounded as model.layers rounds a fraction
    position = min(range(len(layers)), key=lambda i: abs(layers[i] - target))
    layer, emotion = layers[position], list(classes).index(spec.emotion)
    model, tokenizer = lm
    texts = list(texts)[: int(spec.max_texts)]
    sweep = steering_sweep(model, tokenizer, texts, list(classes), layer, directions[position, emotion],
                           [float(a) for a in spec.alphas], progress=print_progress)
    table = folder / "steering.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["alpha", "text", *classes, "mass"])
        for a, alpha in enumerate(sweep.alphas):
            for t, text in enumerate(texts):
                writer.writerow([alpha, text, *(f"{v:.6g}" for v in sweep.distribution[a, t].tolist()),
                                 f"{float(sweep.mass[a, t]):.6g}"])
    mean = sweep.distribution.mean(1)  # [A, C]
    figure = plot_steering(sweep.alphas, mean, sweep.mass.mean(1), classes, emotion, folder / "steering.png",
                           title=f"{cfg.model.name}: +alpha x {spec.emotion} direction at layer {layer}")
    metrics = {f"steering/{spec.emotion}_share/alpha_{alpha:g}": float(mean[a, emotion])
               for a, alpha in enumerate(sweep.alphas)}
    metrics["steering/layer"] = float(layer)
    return metrics, [table, figure]


def plot_steering(alphas: Sequence[float], distribution: torch.Tensor, mass: torch.Tensor, classes: Sequence[str],
                  target: int, path: Path, title: str) -> Path:
    """The mean answer distribution over the classes against alpha (the steered class bold), and the mean mass the
    classes' first tokens hold (dashed, right axis: a collapsing mass means the model is pushed off its language)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colours = plt.get_cmap("tab10")
    for index, name in enumerate(classes):
        ax.plot(alphas, distribution[:, index].tolist(), marker="o", color=colours(index % 10), label=name,
                linewidth=3 if index == target else 1)
    ax.set_xlabel("alpha (multiples of the direction)")
    ax.set_ylabel("share of the zero-shot answer")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    other = ax.twinx()
    other.plot(alphas, mass.tolist(), color="grey", linestyle="--", label="mass")
    other.set_ylabel("probability of any class word (dashed)")
    other.set_ylim(0.0, 1.0)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.12, 1.0))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
