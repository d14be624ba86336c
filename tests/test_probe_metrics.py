"""Per-layer metrics with bootstrap intervals: the point values are scikit-learn's, the intervals are the percentiles of
seeded resamples shared by all layers, two layers' difference has its own interval, the baselines (majority class,
TF-IDF + logistic regression) report the same metrics, and the depth figure draws each layer's band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from affectlab.probing import (
    MetricsError,
    bootstrap_metrics,
    majority_baseline,
    plot_accuracy_by_depth,
    point_metrics,
    tfidf_baseline,
)


def noisy_predictions(labels: torch.Tensor, correct: float, classes: int, seed: int) -> torch.Tensor:
    """Predictions equal to the labels with probability ``correct``, else a random class."""
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(len(labels), generator=generator) < correct
    return torch.where(keep, labels, torch.randint(0, classes, labels.shape, generator=generator))


def test_point_metrics_are_scikit_learns_accuracy_and_f1():
    # class 5 is predicted but never true, class 6 neither: scikit-learn averages F1 over classes 0-5
    labels = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(0))
    predictions = torch.stack([noisy_predictions(labels, 0.3, 6, 1), noisy_predictions(labels, 0.8, 6, 2)])
    metrics = point_metrics(predictions, labels, num_classes=7)
    for layer in range(2):
        y, p = labels.numpy(), predictions[layer].numpy()
        assert metrics["accuracy"][layer] == pytest.approx(accuracy_score(y, p))
        assert metrics["f1_macro"][layer] == pytest.approx(f1_score(y, p, average="macro"))
        assert metrics["f1_weighted"][layer] == pytest.approx(f1_score(y, p, average="weighted"))


def test_multi_label_metrics_are_exact_match_and_f1_per_label():
    generator = torch.Generator().manual_seed(0)
    labels = torch.rand(200, 4, generator=generator) < 0.3
    predictions = labels ^ (torch.rand(2, 200, 4, generator=generator) < torch.tensor([0.4, 0.1]).view(2, 1, 1))
    metrics = point_metrics(predictions, labels)
    for layer in range(2):
        y, p = labels.numpy(), predictions[layer].numpy()
        assert metrics["accuracy"][layer] == pytest.approx(accuracy_score(y, p))  # the whole set must match
        assert metrics["f1_macro"][layer] == pytest.approx(f1_score(y, p, average="macro"))
        assert metrics["f1_weighted"][layer] == pytest.approx(f1_score(y, p, average="weighted"))


def test_intervals_are_the_percentiles_of_seeded_resamples():
    labels = torch.randint(0, 4, (120,), generator=torch.Generator().manual_seed(0))
    predictions = noisy_predictions(labels, 0.6, 4, 1)
    report = bootstrap_metrics(predictions, labels, 4, resamples=200, confidence=0.9, seed=7, chunk=64)
    # the same resamples drawn by hand, each scored by scikit-learn
    rows = torch.randint(0, 120, (200, 120), generator=torch.Generator().manual_seed(7)).numpy()
    y, p = labels.numpy(), predictions.numpy()
    f1 = np.array([f1_score(y[r], p[r], average="macro") for r in rows])
    accuracy = np.array([accuracy_score(y[r], p[r]) for r in rows])
    assert report.low["f1_macro"][0] == pytest.approx(np.percentile(f1, 5), abs=1e-6)
    assert report.high["f1_macro"][0] == pytest.approx(np.percentile(f1, 95), abs=1e-6)
    assert report.low["accuracy"][0] == pytest.approx(np.percentile(accuracy, 5), abs=1e-6)
    assert report.low["accuracy"][0] < report.value["accuracy"][0] < report.high["accuracy"][0]
    again = bootstrap_metrics(predictions, labels, 4, resamples=200, confidence=0.9, seed=7)
    assert torch.equal(report.draws["accuracy"], again.draws["accuracy"])  # seeded, whatever the chunk size


def test_intervals_narrow_as_the_test_set_grows():
    widths = []
    for n in (100, 1600):
        labels = torch.randint(0, 7, (n,), generator=torch.Generator().manual_seed(n))
        report = bootstrap_metrics(noisy_predictions(labels, 0.5, 7, 0), labels, 7, resamples=300)
        widths.append(float(report.high["accuracy"][0] - report.low["accuracy"][0]))
    assert widths[1] < widths[0] / 3  # about 1/√16 = 1/4


def test_layers_differ_when_the_interval_of_their_difference_excludes_zero():
    labels = torch.randint(0, 7, (400,), generator=torch.Generator().manual_seed(0))
    predictions = torch.stack([noisy_predictions(labels, p, 7, seed) for seed, p in enumerate((0.5, 0.52, 0.8))])
    report = bootstrap_metrics(predictions, labels, 7, resamples=500, names=["layer_00", "layer_01", "layer_02"])
    value, low, high = report.difference("accuracy", 2, 0)
    assert value == pytest.approx(float(report.value["accuracy"][2] - report.value["accuracy"][0]))
    assert 0 < low < value < high  # 0.8 against 0.5 correct: they differ
    _, low, high = report.difference("accuracy", 1, 0)
    assert low < 0 < high  # 0.52 against 0.5 on 400 examples: no telling them apart
    # a baseline scored apart on the same resamples (same seed, same examples): the same paired difference
    top, bottom = (bootstrap_metrics(predictions[i], labels, 7, resamples=500) for i in (2, 0))
    assert top.difference("accuracy", 0, 0, bottom) == pytest.approx(report.difference("accuracy", 2, 0))
    rows = report.rows()
    assert rows[2]["name"] == "layer_02" and rows[2]["accuracy_low"] < rows[2]["accuracy"] < rows[2]["accuracy_high"]


def test_bootstrap_reports_progress_until_every_resample_is_done():
    calls = []
    labels = torch.randint(0, 3, (50,), generator=torch.Generator().manual_seed(0))
    bootstrap_metrics(labels, labels, 3, resamples=250, chunk=100, progress=lambda *call: calls.append(call))
    assert calls == [(100, 250, "bootstrap resamples"), (200, 250, "bootstrap resamples"),
                     (250, 250, "bootstrap resamples")]


def test_majority_baseline_always_predicts_the_most_frequent_training_class():
    train = torch.tensor([6] * 50 + [3] * 30 + [0] * 20)
    test = torch.tensor([6] * 45 + [3] * 35 + [1] * 20)
    report = majority_baseline(train, test, 7, resamples=100)
    assert report.value["accuracy"][0] == pytest.approx(0.45)
    assert report.value["f1_macro"][0] == pytest.approx(f1_score(test.numpy(), np.full(100, 6), average="macro"))
    multi = majority_baseline(torch.tensor([[1, 0], [1, 1], [1, 0]]), torch.tensor([[1, 0], [0, 1]]), resamples=10)
    assert multi.value["accuracy"][0] == pytest.approx(0.5)  # label 0 is in most training texts: always predicted


def test_tfidf_baseline_reads_the_words_of_the_texts():
    words = {0: ["furious", "angry", "outraged"], 1: ["delighted", "happy", "wonderful"], 2: ["scared", "afraid"]}
    rng = np.random.default_rng(0)

    def texts(n: int):
        labels = rng.integers(0, 3, n)
        filler = ["the", "meeting", "is", "today", "we", "went", "home", "and", "then"]
        texts = [" ".join([*rng.choice(filler, 4), rng.choice(words[y]), *rng.choice(filler, 3)]) for y in labels]
        return texts, labels

    train_texts, train_labels = texts(150)
    test_texts, test_labels = texts(100)
    report = tfidf_baseline(train_texts, train_labels, test_texts, test_labels, 3, resamples=100)
    majority = majority_baseline(train_labels, test_labels, 3, resamples=100)
    assert report.names == ["tfidf_logreg"] and report.value["accuracy"][0] > 0.9
    assert majority.value["accuracy"][0] < 0.5
    with pytest.raises(MetricsError, match="150 training texts for 149 labels"):
        tfidf_baseline(train_texts, train_labels[:-1], test_texts, test_labels)


def test_tfidf_baseline_takes_multi_hot_labels():
    rng = np.random.default_rng(0)
    words = [["furious", "angry"], ["delighted", "happy"], ["scared", "afraid"]]

    def texts(n: int):
        labels = (rng.random((n, 3)) < 0.35).astype(int)  # any number of emotions per text
        chosen = [[rng.choice(words[c]) for c in range(3) if row[c]] for row in labels]
        return [" ".join(["so", "today", *emotions, "then"]) for emotions in chosen], labels

    train_texts, train_labels = texts(200)
    test_texts, test_labels = texts(100)
    report = tfidf_baseline(train_texts, train_labels, test_texts, test_labels, resamples=50)
    majority = majority_baseline(train_labels, test_labels, resamples=50)
    assert report.value["f1_macro"][0] > 0.95 and majority.value["f1_macro"][0] == 0.0  # no label in most texts


def test_predictions_that_do_not_fit_the_labels_are_refused_by_shape():
    labels = torch.tensor([0, 1, 2])
    with pytest.raises(MetricsError, match=r"predictions of shape \(2, 4\) for 3 labels"):
        bootstrap_metrics(torch.zeros(2, 4, dtype=torch.long), labels)
    with pytest.raises(MetricsError, match="predictions are floats"):
        bootstrap_metrics(torch.zeros(3, 3), labels)
    with pytest.raises(MetricsError, match="labels hold class 0..2: expected 0..1"):
        bootstrap_metrics(torch.zeros(3, dtype=torch.long), labels, num_classes=2)


def test_the_depth_figure_draws_each_layers_interval_as_a_band(tmp_path: Path):
    from matplotlib.image import imread

    labels = torch.randint(0, 7, (150,), generator=torch.Generator().manual_seed(0))
    predictions = torch.stack([noisy_predictions(labels, p, 7, i) for i, p in enumerate((0.2, 0.5, 0.6, 0.55))])
    report = bootstrap_metrics(predictions, labels, 7, resamples=200)
    depths = [0.0, 1 / 3, 2 / 3, 1.0]
    baseline = majority_baseline(labels[:100], labels[100:], 7, resamples=200)
    with_band = plot_accuracy_by_depth({"model": report.curve("accuracy", depths)}, tmp_path / "band.png",
                                       baselines={"majority": baseline.interval("accuracy")})
    without = plot_accuracy_by_depth({"model": report.curve("accuracy", depths)[:2]}, tmp_path / "line.png",
                                     baselines={"majority": baseline.interval("accuracy")[0]})
    band, line = imread(with_band), imread(without)
    assert band.shape == line.shape
    assert (np.abs(band - line).sum(-1) > 0.05).mean() > 0.01  # the bands cover more than 1% of the figure
    with pytest.raises(MetricsError, match="3 depths for 4 rows"):
        report.curve("accuracy", depths[:3])
