"""Probes trained to convergence: the linear probe solves scikit-learn's logistic regression objective, every layer
keeps its own best weights by the validation split, multi-hot targets train, and on real MELD utterances (MiniLM
features, natural class distribution) every layer's probe scores at least scikit-learn's LogisticRegression and above
the majority class."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from builders import meld_splits
from affectlab.probing import (
    LayerProbes,
    ProbeTrainingError,
    bootstrap_metrics,
    decisions,
    print_progress,
    tfidf_baseline,
    train_probes,
)
from affectlab.probing.training import validation_scores


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is faster (conftest)


def layered_data(n: int, hidden: int = 16, classes: int = 5, signal: tuple[float, ...] = (0.0, 3.0), seed: int = 0):
    """Features ``[len(signal), n, hidden]``: every layer holds the class centres scaled by its signal, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=generator)
    centres = torch.randn(classes, hidden, generator=generator)
    layers = [s * centres[labels] + torch.randn(n, hidden, generator=generator) for s in signal]
    return torch.stack(layers), labels


def test_the_linear_probe_solves_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    features, labels = layered_data(300, signal=(0.5, 2.0))
    torch.manual_seed(0)
    probes = LayerProbes(2, 16, 5, kind="linear")
    training = train_probes(probes, features, labels, features[:, :50], labels[:50], weight_decay=1 / 300)
    assert training.solver == "lbfgs" and training.converged and training.weight_decay == [1 / 300] * 2
    with torch.no_grad():
        ours = probes(features).softmax(-1)
        standardised = probes.standardise(features)
    for layer in range(2):
        reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000)  # C = 1 is λ = 1/N on the mean loss
        reference.fit(standardised[layer].numpy(), labels.numpy())
        expected = reference.predict_proba(standardised[layer].numpy())
        np.testing.assert_allclose(ours[layer].numpy(), expected, atol=2e-3)


def test_every_layer_keeps_the_weights_of_its_best_validation_epoch():
    # layer 0 holds nothing (an MLP can only memorise it), layer 1 the classes: they peak at different epochs
    features, labels = layered_data(400, signal=(0.0, 1.0))
    torch.manual_seed(0)
    probes = LayerProbes(2, 16, 5, kind="mlp", width=64)
    train, val = slice(0, 300), slice(300, 400)
    training = train_probes(probes, features[:, train], labels[train], features[:, val], labels[val],
                            max_epochs=300, patience=15, lr=3e-3)
    history = torch.tensor(training.history)  # [epochs, layers] validation scores (negative losses)
    assert training.solver == "adamw" and training.converged
    assert len(history) == training.epochs_run < 300
    assert training.epochs_run == max(training.best_epoch) + 15  # stopped `patience` epochs after the last gain
    assert training.best_epoch == (history.argmax(0) + 1).tolist()
    assert training.best_epoch[0] != training.best_epoch[1]
    with torch.no_grad():
        kept = validation_scores(probes(features[:, val]), labels[val], "loss")
    torch.testing.assert_close(kept, torch.tensor(training.val_score), atol=1e-5, rtol=0)  # the best weights, restored
    torch.testing.assert_close(kept, history.max(0).values, atol=1e-5, rtol=0)


def test_the_linear_probe_chooses_its_regularisation_per_layer_on_the_validation_split():
    features, labels = layered_data(240, hidden=64, signal=(0.15, 3.0))
    torch.manual_seed(0)
    probes = LayerProbes(2, 64, 5, kind="linear")
    train, val = slice(0, 120), slice(120, 240)
    training = train_probes(probes, features[:, train], labels[train], features[:, val], labels[val])
    assert training.weight_decay[0] > training.weight_decay[1]  # the noisy layer wants the stronger penalty
    history = torch.tensor(training.history)
    torch.testing.assert_close(torch.tensor(training.val_score), history.max(0).values)


def test_probes_of_multi_hot_targets_train_with_a_sigmoid_per_label():
    generator = torch.Generator().manual_seed(0)
    targets = (torch.rand(600, 4, generator=generator) < 0.3).float()  # several emotions per text, or none
    features = torch.stack([torch.randn(600, 12, generator=generator),
                            targets @ torch.randn(4, 12, generator=generator) * 3 + torch.randn(600, 12)])
    train, val, test = slice(0, 400), slice(400, 500), slice(500, 600)
    for kind in ("linear", "mlp"):
        torch.manual_seed(0)
        probes = LayerProbes(2, 12, 4, kind=kind, width=32)
        train_probes(probes, features[:, train], targets[train], features[:, val], targets[val], lr=3e-3,
                     max_epochs=60)
        with torch.no_grad():
            predicted = decisions(probes(features[:, test]), multi_label=True)
        f1 = bootstrap_metrics(predicted, targets[test], resamples=10).value["f1_macro"]
        assert f1[0] < 0.45 and f1[1] > 0.9, (kind, f1)


def test_training_progress_reaches_a_log_file_while_it_runs(tmp_path: Path, monkeypatch):
    log = tmp_path / "train.log"
    with log.open("w") as handle:
        monkeypatch.setattr(sys, "stdout", handle)  # as under nohup or a batch scheduler
        features, labels = layered_data(200)
        train_probes(LayerProbes(2, 16, 5, kind="mlp", width=16), features, labels, features, labels,
                     max_epochs=4, patience=100, progress=print_progress)
        lines = log.read_text().splitlines()  # read before the file is closed: every line was flushed
        train_probes(LayerProbes(2, 16, 5, kind="linear"), features, labels, features, labels,
                     weight_decay=[1.0, 0.1], progress=print_progress)
        lines_linear = log.read_text().splitlines()[len(lines):]
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert lines[0].startswith("MLP probes: best val loss")
    assert lines_linear[0].startswith("linear probes, λ=1: ") and lines_linear[1].endswith("2/2")


def test_labels_that_do_not_fit_the_probes_are_refused_by_name():
    probes = LayerProbes(2, 8, 3, kind="linear")
    features = torch.randn(2, 10, 8)
    with pytest.raises(ProbeTrainingError, match="train_labels hold class 0..3: expected 0..2"):
        train_probes(probes, features, torch.arange(10) % 4, features, torch.zeros(10, dtype=torch.long))
    with pytest.raises(ProbeTrainingError, match=r"val_features of shape \(3, 10, 8\)"):
        train_probes(probes, features, torch.zeros(10, dtype=torch.long), torch.randn(3, 10, 8),
                     torch.zeros(10, dtype=torch.long))
    with pytest.raises(ProbeTrainingError, match="monitor='auc'"):
        train_probes(probes, features, torch.zeros(10, dtype=torch.long), features, torch.zeros(10, dtype=torch.long),
                     monitor="auc")


# ---- real data: MiniLM on MELD utterances, natural class distribution --------------------------------------------


def sklearn_logistic_regression_accuracy(splits) -> list[float]:
    """scikit-learn's LogisticRegression (defaults: C=1, lbfgs) per layer on the same standardised features."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    (train_x, train_y, _), (test_x, test_y, _) = splits["train"], splits["test"]
    accuracy = []
    for layer in range(train_x.shape[0]):
        scaler = StandardScaler().fit(train_x[layer].numpy())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # its default 100 iterations, as users run it
            model = LogisticRegression().fit(scaler.transform(train_x[layer].numpy()), train_y.numpy())
        accuracy.append(model.score(scaler.transform(test_x[layer].numpy()), test_y.numpy()))
    return accuracy


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_probes_on_real_meld_features_match_logistic_regression_and_beat_the_majority(shared_data: Path, kind):
    splits = meld_splits(shared_data)
    (train_x, train_y, train_texts), (val_x, val_y, _), (test_x, test_y, test_texts) = (
        splits["train"], splits["val"], splits["test"])
    reference = sklearn_logistic_regression_accuracy(splits)
    majority = float((test_y == torch.bincount(train_y).argmax()).float().mean())
    torch.manual_seed(0)
    probes = LayerProbes(train_x.shape[0], train_x.shape[2], 7, kind=kind)
    training = train_probes(probes, train_x, train_y, val_x, val_y)
    report = bootstrap_metrics(decisions(probes(test_x).detach()), test_y, 7, resamples=1000)
    accuracy = report.value["accuracy"]
    tfidf = tfidf_baseline(train_texts, train_y, test_texts, test_y, 7, resamples=1000).interval("accuracy")
    print(f"\n{kind} probes on MiniLM/MELD ({training.solver}, {training.epochs_run} epochs, best epochs "
          f"{training.best_epoch}, λ {training.weight_decay}); majority {majority:.3f}; TF-IDF + logistic "
          f"regression {tfidf[0]:.3f} [{tfidf[1]:.3f}, {tfidf[2]:.3f}]")
    for layer, (row, theirs) in enumerate(zip(report.rows(), reference)):
        print(f"layer {layer}: probe {row['accuracy']:.3f} [{row['accuracy_low']:.3f}, {row['accuracy_high']:.3f}]"
              f" (macro-F1 {row['f1_macro']:.3f}, weighted F1 {row['f1_weighted']:.3f})"
              f"  sklearn LogisticRegression {theirs:.3f}")
    assert training.converged
    for layer, (ours, theirs) in enumerate(zip(accuracy.tolist(), reference)):
        assert ours >= theirs - 0.01, (layer, ours, theirs)
        assert ours > majority, (layer, ours, majority)
