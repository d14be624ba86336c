"""What a probing run reports, per layer, on the test split as it is (its natural class distribution): accuracy,
macro-F1 and weighted F1 of every layer's probe and of the projection classifier on the emotion directions, each with
a bootstrap interval; the baselines beside them (the majority class, TF-IDF + logistic regression) on the same
splits and the same resamples; the best layer, chosen on the validation split (the test split only reports it), with
every other layer's paired difference from it. Then the table, the figures and the summary of the run."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from affectlab.lab.config import flatten
from affectlab.lab.report import plot_confusion
from affectlab.probing import (
    METRICS,
    BootstrapMetrics,
    ProbeTraining,
    bootstrap_metrics,
    decisions,
    majority_baseline,
    plot_accuracy_by_depth,
    plot_probe_pca,
    point_metrics,
    predict,
    tfidf_baseline,
)

LABELS = {"accuracy": "accuracy", "f1_macro": "macro-F1", "f1_weighted": "weighted F1"}
CONFUSION_FIGURE_CLASSES = 12  # more classes (GoEmotions' 28): the confusion matrix as a CSV only, a figure unreadable


@dataclass
class LayerReport:
    """Everything a run reports; rows of the metrics follow ``layers``."""

    layers: list[int]
    num_layers: int
    classes: list[str]
    multi_label: bool
    probes: BootstrapMetrics
    projection: BootstrapMetrics
    baselines: dict[str, BootstrapMetrics]
    val: dict[str, torch.Tensor]  # point metrics of every layer's probe on the validation split
    best: int  # position in ``layers`` of the best layer by ``metric`` on the validation split
    metric: str
    training: ProbeTraining
    test_logits: torch.Tensor  # [L, N, C]
    test_labels: torch.Tensor

    @property
    def depths(self) -> list[float]:
        return [layer / self.num_layers for layer in self.layers]

    @property
    def best_layer(self) -> int:
        return self.layers[self.best]


def evaluate(probes, projection, parts: Mapping[str, tuple[torch.Tensor, torch.Tensor]], texts: Mapping[str, list],
             layers: Sequence[int], num_layers: int, classes: Sequence[str], training: ProbeTraining,
             report: DictConfig, seed: int, train_counts: Sequence[int] | None = None) -> LayerReport:
    """Scores the trained ``probes`` and ``projection`` on ``parts["test"]``, their validation scores on
    ``parts["val"]``, and the baselines trained on ``parts["train"]`` (``texts``: each part's texts;
    ``train_counts``: training items per class before any balancing, whose largest is the majority class)."""
    (_, train_y), (val_x, val_y), (test_x, test_y) = parts["train"], parts["val"], parts["test"]
    multi_label, count = test_y.dim() == 2, len(classes)
    bootstrap = dict(resamples=int(report.resamples), confidence=float(report.confidence), seed=seed)
    names = [f"layer_{layer:02d}" for layer in layers]
    logits = predict(probes, test_x)
    with torch.no_grad():
        projected = projection(test_x)
    scored = bootstrap_metrics(decisions(logits, multi_label), test_y, count, names=names, **bootstrap)
    projected = bootstrap_metrics(decisions(projected, multi_label), test_y, count, names=names, **bootstrap)
    # the same seed and number of test texts: the baselines are scored on the very resamples of the layers
    baselines = {
        "majority": majority_baseline(train_y, test_y, count, class_counts=train_counts, **bootstrap),
        "tfidf_logreg": tfidf_baseline(texts["train"], train_y.numpy(), texts["test"], test_y.numpy(), count,
                                       **bootstrap),
    }
    val = point_metrics(decisions(predict(probes, val_x), multi_label), val_y, count)
    best = int(torch.argmax(val[report.metric]))
    return LayerReport(list(layers), num_layers, list(classes), multi_label, scored, projected, baselines, val, best,
                       str(report.metric), training, logits, test_y)


def summary_metrics(report: LayerReport) -> dict[str, float]:
    """The run's metrics: the best layer's test metrics with intervals and its difference from TF-IDF, every layer
    (probe and projection), the baselines, what training did and the split sizes."""
    best, probes = report.best, report.probes
    summary: dict[str, float] = {"best_layer": float(report.best_layer), "best_depth": report.depths[best],
                                 f"best_val/{report.metric}": float(report.val[report.metric][best])}
    for metric in METRICS:
        value, low, high = probes.interval(metric, best)
        summary.update({f"best/{metric}": value, f"best/{metric}_low": low, f"best/{metric}_high": high})
        difference = probes.difference(metric, best, 0, report.baselines["tfidf_logreg"])
        summary.update(dict(zip((f"best_minus_tfidf/{metric}", f"best_minus_tfidf/{metric}_low",
                                 f"best_minus_tfidf/{metric}_high"), difference)))
    for name, baseline in report.baselines.items():
        for metric in METRICS:
            value, low, high = baseline.interval(metric)
            summary.update({f"baseline/{name}/{metric}": value, f"baseline/{name}/{metric}_low": low,
                            f"baseline/{name}/{metric}_high": high})
    summary["test_best_layer"] = float(report.layers[int(torch.argmax(probes.value[report.metric]))])
    if not report.multi_label:
        summary["chance_accuracy"] = 1.0 / len(report.classes)
    summary.update({"num_classes": float(len(report.classes)), "num_layers": float(report.num_layers),
                    "epochs_run": float(report.training.epochs_run), "test_examples": float(probes.num_examples)})
    for prefix, scores in (("test", probes), ("projection", report.projection)):
        for metric in METRICS:
            for position, layer in enumerate(report.layers):
                value, low, high = scores.interval(metric, position)
                summary.update({f"{prefix}/{metric}/layer_{layer:02d}": value,
                                f"{prefix}/{metric}_low/layer_{layer:02d}": low,
                                f"{prefix}/{metric}_high/layer_{layer:02d}": high})
    for position, layer in enumerate(report.layers):
        summary[f"best_epoch/layer_{layer:02d}"] = float(report.training.best_epoch[position])
        summary[f"weight_decay/layer_{layer:02d}"] = float(report.training.weight_decay[position])
    return summary


def headline(summary: Mapping[str, float], metric: str) -> dict[str, float]:
    """The few numbers printed at the end of a run."""
    keys = ["best_layer", f"best_val/{metric}", *(f"best/{m}{s}" for m in METRICS for s in ("", "_low", "_high")),
            *(f"baseline/{b}/{metric}" for b in ("majority", "tfidf_logreg")), f"best_minus_tfidf/{metric}",
            f"best_minus_tfidf/{metric}_low", f"best_minus_tfidf/{metric}_high", "test_best_layer", "epochs_run",
            "test_examples"]
    return {key: summary[key] for key in keys if key in summary}


def layer_rows(report: LayerReport) -> list[dict[str, object]]:
    """One row per layer: the probe's metrics with intervals, its validation score, its paired difference from the
    best layer, how it was trained, and the projection classifier's metrics."""
    rows = []
    for position, layer in enumerate(report.layers):
        row: dict[str, object] = {"layer": layer, "depth": round(report.depths[position], 4)}
        for metric in METRICS:
            value, low, high = report.probes.interval(metric, position)
            row.update({metric: value, f"{metric}_low": low, f"{metric}_high": high})
        row[f"val_{report.metric}"] = float(report.val[report.metric][position])
        difference = report.probes.difference(report.metric, position, report.best)
        row.update(dict(zip((f"{report.metric}_minus_best", f"{report.metric}_minus_best_low",
                             f"{report.metric}_minus_best_high"), difference)))
        row["best_epoch"] = report.training.best_epoch[position]
        row["weight_decay"] = report.training.weight_decay[position]
        for metric in METRICS:
            value, low, high = report.projection.interval(metric, position)
            row.update({f"projection_{metric}": value, f"projection_{metric}_low": low,
                        f"projection_{metric}_high": high})
        rows.append(row)
    return rows


def write_layer_table(rows: Sequence[Mapping[str, object]], path: Path) -> Path:
    """`layer_rows` as a CSV, floats to 4 decimals."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()})
    return path


def earlier_depth_curves(client, experiment_id: str, run_id: str, cfg: DictConfig,
                         metrics: Sequence[str] = METRICS) -> dict[str, dict[str, tuple[list, list]]]:
    """Per metric of ``metrics``, the metric against depth of the latest earlier run of every other model in this
    MLflow experiment that probed the same corpus (same ``data.*``), so that the depth figure compares models, one
    line each, as the paper's does. The runs are searched once."""
    same_data = {key: str(value) for key, value in flatten(cfg.data, prefix="data.").items()}
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=200)
    earlier: dict[str, dict[str, tuple[list, list]]] = {}
    for metric in metrics:
        prefix = f"test/{metric}/layer_"
        curves = earlier[metric] = {}
        for run in runs:
            params, values = run.data.params, run.data.metrics
            name = params.get("model.name")
            if (run.info.run_id == run_id or name is None or name == str(cfg.model.name) or name in curves
                    or "num_layers" not in values or any(params.get(k) != v for k, v in same_data.items())):
                continue
            layers = sorted((int(key.rsplit("_", 1)[1]), value) for key, value in values.items()
                            if key.startswith(prefix))
            if layers:
                curves[name] = ([layer / values["num_layers"] for layer, _ in layers], [value for _, value in layers])
    return earlier


def figures(report: LayerReport, folder: Path, name: str, corpus: str, earlier: Mapping[str, Mapping]) -> list[Path]:
    """Per metric, the probe's curve over depth with its bands, the projection's, earlier models' curves
    (``earlier[metric]``) and the baselines; then the best layer's confusion matrix and the PCA of its outputs."""
    paths = []
    for metric in METRICS:
        kind = "linear" if report.training.solver == "lbfgs" else "MLP"
        curves = {f"{name} ({kind} probe)": report.probes.curve(metric, report.depths),
                  "projection on the emotion directions": report.projection.curve(metric, report.depths),
                  **earlier.get(metric, {})}
        baselines = {label: report.baselines[key].interval(metric)
                     for key, label in (("majority", "majority class"), ("tfidf_logreg", "TF-IDF + logistic reg."))}
        chance = 1.0 / len(report.classes) if metric == "accuracy" and not report.multi_label else None
        paths.append(plot_accuracy_by_depth(
            curves, folder / f"{metric}_by_depth.png", chance=chance, baselines=baselines,
            ylabel=f"test {LABELS[metric]} ({report.probes.confidence:.0%} interval)",
            title=f"{LABELS[metric]} by layer depth on {corpus}"))
    if not report.multi_label:
        predicted = report.test_logits[report.best].argmax(-1)
        count = len(report.classes)
        confusion = np.zeros((count, count), dtype=np.int64)
        np.add.at(confusion, (report.test_labels.numpy(), predicted.numpy()), 1)
        stem = folder / f"confusion_layer_{report.best_layer:02d}"
        with stem.with_suffix(".csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true \\ predicted", *report.classes])
            writer.writerows([name_, *row] for name_, row in zip(report.classes, confusion.tolist()))
        paths.append(stem.with_suffix(".csv"))
        if count <= CONFUSION_FIGURE_CLASSES:
            paths.append(plot_confusion(confusion, report.classes, stem.with_suffix(".png"),
                                        title=f"{name}, layer {report.best_layer} (test)"))
        paths.append(plot_probe_pca(report.test_logits[report.best], report.test_labels, report.classes,
                                    folder / "probe_pca.png",
                                    title=f"{name}, layer {report.best_layer}: probe outputs"))
    return paths
