"""Per-layer test metrics with bootstrap confidence intervals, and the baselines every probing run reports beside them.

Accuracy, macro-F1 and weighted F1 of every layer's predictions, each with a percentile bootstrap interval (Efron &
Tibshirani 1993: resample the test examples with replacement, recompute the metric, take the quantiles). All layers
are scored on the same resamples, so the difference between two layers has its own interval
(`BootstrapMetrics.difference`): that, not the overlap of two intervals, says whether two layers differ.

Resampling is done with count weights (how often each example is drawn in each resample), so every count of every
resample is a sum of weights. F1 follows scikit-learn: averaged over the classes present in the labels or in the
predictions of the (resampled) set, weighted F1 by each class's support. Multi-label targets (multi-hot ``[N, C]``)
are scored per label at the given decisions (`decisions`: probability 0.5), accuracy being the exact-match ratio;
a label neither true nor predicted anywhere is left out of the macro average here, where scikit-learn counts it as 0.

These functions score a complete set of predictions; under several processes, gather the predictions first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

METRICS = ("accuracy", "f1_macro", "f1_weighted")

Progress = Callable[[int, int, str], None]  # (done, total, what): every long loop of affectlab.probing reports so


class MetricsError(ValueError):
    """Predictions and labels that cannot be scored together; the message names the shapes or values."""


def print_progress(done: int, total: int, what: str) -> None:
    """A `Progress` callback that prints one line per call and flushes, so that it shows in a log file too."""
    print(f"{what}: {done}/{total}", flush=True)


@dataclass
class BootstrapMetrics:
    """Metrics of ``L`` prediction sets (layers, or one baseline) on one test set, with percentile intervals.

    ``value[m]``, ``low[m]``, ``high[m]``: tensors ``[L]`` for each metric ``m`` of `METRICS`; ``draws[m]``: ``[L, R]``,
    the metric on each of the ``R`` resamples, the same resamples for every layer.
    """

    value: dict[str, torch.Tensor]
    low: dict[str, torch.Tensor]
    high: dict[str, torch.Tensor]
    draws: dict[str, torch.Tensor]
    confidence: float
    num_examples: int
    names: list[str] = field(default_factory=list)  # one per row (e.g. "layer_03"), for tables

    def __len__(self) -> int:
        return len(self.value["accuracy"])

    def rows(self) -> list[dict[str, float | str]]:
        """One dict per layer: name, and every metric with its ``_low`` and ``_high`` bounds (for a CSV or MLflow)."""
        out = []
        for i in range(len(self)):
            row: dict[str, float | str] = {"name": self.names[i] if self.names else str(i)}
            for m in self.value:
                row[m] = float(self.value[m][i])
                row[f"{m}_low"] = float(self.low[m][i])
                row[f"{m}_high"] = float(self.high[m][i])
            out.append(row)
        return out

    def curve(self, metric: str, depths: Sequence[float]) -> tuple[list[float], list[float], list[float], list[float]]:
        """``(depths, values, lows, highs)`` of one metric: a line of `plot_accuracy_by_depth` with its band."""
        if len(depths) != len(self):
            raise MetricsError(f"{len(depths)} depths for {len(self)} rows of metrics: expected one per layer")
        return list(depths), self.value[metric].tolist(), self.low[metric].tolist(), self.high[metric].tolist()

    def interval(self, metric: str, row: int = 0) -> tuple[float, float, float]:
        """``(value, low, high)`` of one metric of one row (a baseline's line in `plot_accuracy_by_depth`)."""
        return float(self.value[metric][row]), float(self.low[metric][row]), float(self.high[metric][row])

    def difference(self, metric: str, a: int, b: int, other: BootstrapMetrics | None = None
                   ) -> tuple[float, float, float]:
        """Metric of row ``a`` minus row ``b`` (of ``other``, scored on the same resamples: a baseline; default this
        one) with its paired percentile interval: the rows differ (at this confidence) when the interval excludes 0."""
        other = self if other is None else other
        draws = self.draws[metric][a] - other.draws[metric][b]
        tail = (1.0 - self.confidence) / 2
        low, high = torch.quantile(draws, torch.tensor([tail, 1.0 - tail], dtype=draws.dtype)).tolist()
        return float(self.value[metric][a] - other.value[metric][b]), low, high


def decisions(logits: torch.Tensor, multi_label: bool = False) -> torch.Tensor:
    """What a probe predicts from its logits ``[..., C]``: the class index (argmax), or for multi-label targets the
    multi-hot set of labels whose probability (sigmoid) is above 0.5."""
    return logits > 0 if multi_label else logits.argmax(-1)


def resample_counts(num_examples: int, resamples: int, generator: torch.Generator) -> torch.Tensor:
    """``[resamples, num_examples]``: how many times each example is drawn in each bootstrap resample."""
    draws = torch.randint(0, num_examples, (resamples, num_examples), generator=generator)
    counts = torch.zeros(resamples, num_examples, dtype=torch.float64)
    return counts.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.float64))


def _f1_from_counts(tp: torch.Tensor, predicted: torch.Tensor, support: torch.Tensor) -> dict[str, torch.Tensor]:
    """Macro and weighted F1 from per-class counts ``[..., C]``, as scikit-learn averages them: over the classes with
    support or predictions, F1 = 2 tp / (support + predicted)."""
    present = (support + predicted) > 0
    f1 = torch.where(present, 2 * tp / (support + predicted).clamp(min=1e-12), 0.0)
    macro = f1.sum(-1) / present.sum(-1).clamp(min=1)
    weighted = (f1 * support).sum(-1) / support.sum(-1).clamp(min=1e-12)
    return {"f1_macro": macro, "f1_weighted": weighted}


def _single_label_metrics(weights: torch.Tensor, predicted: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Metrics under example weights ``[R, N]`` (counts; all ones for the point estimate) of class predictions."""
    c = num_classes
    cell = labels * c + predicted  # each example's cell of the confusion matrix
    confusion = weights.new_zeros(weights.shape[0], c * c).index_add_(1, cell, weights).view(-1, c, c)
    tp = confusion.diagonal(dim1=1, dim2=2)
    total = weights.sum(1)
    metrics = {"accuracy": tp.sum(1) / total}
    metrics.update(_f1_from_counts(tp, confusion.sum(1), confusion.sum(2)))
    return metrics


def _multi_label_metrics(weights: torch.Tensor, predicted: torch.Tensor, labels: torch.Tensor):
    """Metrics under example weights ``[R, N]`` of multi-hot predictions ``[N, C]`` against multi-hot labels."""
    predicted, labels = predicted.to(weights.dtype), labels.to(weights.dtype)
    exact = (predicted == labels).all(1).to(weights.dtype)
    metrics = {"accuracy": (weights @ exact) / weights.sum(1)}
    metrics.update(_f1_from_counts(weights @ (predicted * labels), weights @ predicted, weights @ labels))
    return metrics


def _check(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int | None) -> tuple[torch.Tensor, int, bool]:
    multi_label = labels.dim() == 2
    if multi_label:
        num_classes = labels.shape[1]
        if predictions.dim() == 2:
            predictions = predictions.unsqueeze(0)
        if predictions.dim() != 3 or predictions.shape[1:] != labels.shape:
            raise MetricsError(
                f"multi-hot labels of shape {tuple(labels.shape)} need multi-hot predictions [L, N, C] of the same N "
                f"and C; got {tuple(predictions.shape)} (use decisions(logits, multi_label=True))"
            )
        return predictions.bool(), num_classes, True
    if labels.dim() != 1:
        raise MetricsError(f"labels of shape {tuple(labels.shape)}: expected class indices [N] or multi-hot [N, C]")
    if predictions.dim() == 1:
        predictions = predictions.unsqueeze(0)
    if predictions.dim() != 2 or predictions.shape[1] != labels.shape[0]:
        raise MetricsError(
            f"predictions of shape {tuple(predictions.shape)} for {labels.shape[0]} labels: expected class indices "
            f"[N] or [L, N] (use decisions(logits) on logits)"
        )
    if predictions.is_floating_point():
        raise MetricsError("predictions are floats: expected class indices (use decisions(logits) on logits)")
    if num_classes is None:
        num_classes = int(max(labels.max(), predictions.max())) + 1
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.min() < 0 or values.max() >= num_classes:
            raise MetricsError(
                f"{name} hold class {int(values.min())}..{int(values.max())}: expected 0..{num_classes - 1}"
            )
    return predictions.long(), num_classes, False


def point_metrics(predictions, labels, num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """Accuracy, macro-F1 and weighted F1 ``[L]`` of each layer's predictions (as `bootstrap_metrics`, no intervals)."""
    predictions, labels = torch.as_tensor(np.asarray(predictions)), torch.as_tensor(np.asarray(labels))
    predictions, num_classes, multi_label = _check(predictions, labels, num_classes)
    ones = torch.ones(1, labels.shape[0], dtype=torch.float64)
    per_layer = [
        _multi_label_metrics(ones, layer, labels) if multi_label
        else _single_label_metrics(ones, layer, labels.long(), num_classes)
        for layer in predictions
    ]
    return {m: torch.tensor([float(scores[m][0]) for scores in per_layer]) for m in METRICS}


def bootstrap_metrics(
    predictions: torch.Tensor | np.ndarray | Sequence,
    labels: torch.Tensor | np.ndarray | Sequence,
    num_classes: int | None = None,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    names: Sequence[str] | None = None,
    chunk: int = 100,
    progress: Progress | None = None,
) -> BootstrapMetrics:
    """Accuracy, macro-F1 and weighted F1 of each layer's ``predictions`` against ``labels``, with percentile bootstrap
    intervals from ``resamples`` seeded resamples of the test examples (the same for every layer).

    ``predictions``: class indices ``[L, N]`` (or ``[N]`` for one set) against labels ``[N]``; or multi-hot decisions
    ``[L, N, C]`` against multi-hot labels ``[N, C]``. Resamples are scored ``chunk`` at a time (memory ``chunk × N``).
    """
    predictions, labels = torch.as_tensor(np.asarray(predictions)), torch.as_tensor(np.asarray(labels))
    if not 0.0 < confidence < 1.0:
        raise MetricsError(f"confidence={confidence}: expected a level strictly between 0 and 1 (e.g. 0.95)")
    if resamples < 1:
        raise MetricsError(f"resamples={resamples}: expected at least 1")
    if labels.numel() == 0:
        raise MetricsError("no labels: expected at least one test example")
    predictions, num_classes, multi_label = _check(predictions, labels, num_classes)
    n, layers = labels.shape[0], predictions.shape[0]

    def score(weights: torch.Tensor, layer: int) -> dict[str, torch.Tensor]:
        if multi_label:
            return _multi_label_metrics(weights, predictions[layer], labels)
        return _single_label_metrics(weights, predictions[layer], labels.long(), num_classes)

    value = point_metrics(predictions, labels, num_classes)
    draws = {m: torch.empty(layers, resamples, dtype=torch.float64) for m in METRICS}
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        weights = resample_counts(n, stop - start, generator)
        for layer in range(layers):
            for m, values in score(weights, layer).items():
                draws[m][layer, start:stop] = values
        if progress is not None:
            progress(stop, resamples, "bootstrap resamples")
    tail = (1.0 - confidence) / 2
    q = torch.tensor([tail, 1.0 - tail], dtype=torch.float64)
    bounds = {m: torch.quantile(draws[m], q, dim=1) for m in METRICS}
    return BootstrapMetrics(
        value=value,
        low={m: bounds[m][0].float() for m in METRICS},
        high={m: bounds[m][1].float() for m in METRICS},
        draws={m: draws[m].float() for m in METRICS},
        confidence=confidence,
        num_examples=n,
        names=list(names) if names is not None else [],
    )


def majority_baseline(
    train_labels, test_labels, num_classes: int | None = None, *, class_counts: Sequence[int] | None = None,
    **bootstrap
) -> BootstrapMetrics:
    """The metrics of always predicting the training set's most frequent class (for multi-hot labels: every label
    present in more than half of the training examples), with intervals (``bootstrap``: `bootstrap_metrics` options).
    ``class_counts``: the training set's items per class as the data holds them, when ``train_labels`` are not (a
    training set balanced by oversampling has every class as large)."""
    train, test = torch.as_tensor(np.asarray(train_labels)), torch.as_tensor(np.asarray(test_labels))
    if train.dim() == 2:
        constant = train.float().mean(0) > 0.5
        predictions = constant.expand(test.shape[0], -1)
    else:
        counts = (torch.bincount(train.long(), minlength=num_classes or 0) if class_counts is None
                  else torch.as_tensor(list(class_counts)))
        predictions = torch.full((test.shape[0],), int(counts.argmax()), dtype=torch.long)
    return bootstrap_metrics(predictions, test, num_classes, names=["majority"], **bootstrap)


def tfidf_baseline(
    train_texts: Sequence[str],
    train_labels,
    test_texts: Sequence[str],
    test_labels,
    num_classes: int | None = None,
    *,
    C: float = 1.0,
    **bootstrap,
) -> BootstrapMetrics:
    """TF-IDF of word unigrams and bigrams (sublinear term frequency) and a logistic regression (L2, ``C``) trained on
    the training texts, scored on the test texts; one-vs-rest logistic regressions for multi-hot labels."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    train, test = np.asarray(train_labels), np.asarray(test_labels)
    if len(train_texts) != len(train) or len(test_texts) != len(test):
        raise MetricsError(
            f"{len(train_texts)} training texts for {len(train)} labels, {len(test_texts)} test texts for "
            f"{len(test)} labels: expected one label per text"
        )
    vectoriser = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    train_x = vectoriser.fit_transform(train_texts)
    classifier = LogisticRegression(C=C, max_iter=1000)
    if train.ndim == 2:
        classifier = OneVsRestClassifier(classifier)
    predictions = classifier.fit(train_x, train).predict(vectoriser.transform(test_texts))
    if train.ndim == 2:
        predictions = predictions.astype(bool)
    return bootstrap_metrics(predictions, test, num_classes, names=["tfidf_logreg"], **bootstrap)
