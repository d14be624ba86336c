"""Emotion directions: each class's mean minus the mean of the other classes' means, whatever the class sizes; a
classifier that only projects on them reads the layer holding the emotions (and, on real MELD features, beats the
majority class); a text's per-token trajectory is every token's hidden state projected on the directions, as CSV and
PNG."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from builders import meld_splits, minilm_dir
from affectlab.probing import (
    DirectionsError,
    HiddenStateExtractor,
    LayerProbes,
    ProjectionClassifier,
    bootstrap_metrics,
    decisions,
    emotion_directions,
    fit_projection,
    plot_token_trajectory,
    token_trajectory,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is faster (conftest)


def test_a_direction_is_the_class_mean_minus_the_mean_of_the_other_class_means():
    points = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 4.0], [0.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    labels = torch.tensor([0, 0, 1, 2, 2, 2])  # class means (2, 0), (0, 4), (0, 0)
    directions = emotion_directions(points.unsqueeze(0), labels, 3)
    expected = torch.tensor([[2.0, -2.0], [-1.0, 4.0], [-1.0, -2.0]])  # e.g. (2, 0) - mean((0, 4), (0, 0))
    torch.testing.assert_close(directions[0], expected)


def test_directions_do_not_change_when_a_class_is_repeated():
    generator = torch.Generator().manual_seed(0)
    features, labels = torch.randn(2, 60, 8, generator=generator), torch.arange(60) % 4
    repeated = torch.cat([torch.arange(60), (labels == 0).nonzero().flatten().repeat(5)])  # class 0 six times over
    torch.testing.assert_close(emotion_directions(features[:, repeated], labels[repeated], 4),
                               emotion_directions(features, labels, 4))


def test_a_text_of_several_emotions_counts_in_each_of_their_means():
    points = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [4.0, 4.0]]])
    multi_hot = torch.tensor([[1, 0], [0, 1], [1, 1]])  # the third text is of both classes
    directions = emotion_directions(points, multi_hot, 2)
    torch.testing.assert_close(directions[0], torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))  # means (3, 2) and (2, 3)


def test_a_class_without_examples_is_named():
    with pytest.raises(DirectionsError, match=r"class\(es\) \[2\] have no example"):
        emotion_directions(torch.randn(1, 4, 3), torch.tensor([0, 1, 0, 1]), 3)
    with pytest.raises(DirectionsError, match="5 labels for 4 feature rows"):
        emotion_directions(torch.randn(1, 4, 3), torch.tensor([0, 1, 0, 1, 2]), 3)


def test_the_projection_classifier_reads_the_layer_that_holds_the_emotions():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 5, (800,), generator=generator)
    centres = torch.randn(5, 32, generator=generator)
    noise = torch.randn(2, 800, 32, generator=generator)
    features = torch.stack([noise[0], 1.5 * centres[labels] + noise[1]])  # layer 0 nothing, layer 1 the classes
    classifier = fit_projection(features[:, :600], labels[:600], 5)
    with torch.no_grad():
        report = bootstrap_metrics(decisions(classifier(features[:, 600:])), labels[600:], 5, resamples=200)
    accuracy = report.value["accuracy"]
    assert accuracy[0] < 0.35 and accuracy[1] > 0.9, accuracy  # chance is 0.2
    assert report.low["accuracy"][1] > report.high["accuracy"][0]


@pytest.mark.slow
def test_the_projection_classifier_on_real_meld_features_beats_the_majority_class(shared_data: Path):
    splits = meld_splits(shared_data)
    (train_x, train_y, _), (test_x, test_y, _) = splits["train"], splits["test"]
    classifier = fit_projection(train_x, train_y, 7)
    with torch.no_grad():
        report = bootstrap_metrics(decisions(classifier(test_x)), test_y, 7, resamples=1000)
    majority = float((test_y == torch.bincount(train_y).argmax()).float().mean())
    print(f"\nprojection on difference-of-means directions, MiniLM/MELD; majority {majority:.3f}")
    for layer, row in enumerate(report.rows()):
        print(f"layer {layer}: accuracy {row['accuracy']:.3f} [{row['accuracy_low']:.3f}, {row['accuracy_high']:.3f}]"
              f"  macro-F1 {row['f1_macro']:.3f}  weighted F1 {row['f1_weighted']:.3f}")
    assert (report.value["accuracy"] > majority).all()


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(minilm_dir()).eval(), AutoTokenizer.from_pretrained(minilm_dir())


TEXTS = ["I am so angry with you", "what a wonderful day", "this is terrifying", "the bus leaves at nine",
         "I hate this so much", "we won, I am thrilled", "I am scared of the dark", "the report is on the desk"]
LABELS = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
CLASSES = ["anger", "joy", "fear", "neutral"]


def test_a_token_trajectory_is_every_tokens_state_projected_on_the_directions(minilm, tmp_path: Path):
    model, tokenizer = minilm
    extractor = HiddenStateExtractor(model, tokenizer, [0, 3, 6])
    classifier = fit_projection(extractor(TEXTS), LABELS, 4)
    text = "I thought it was fine, then it got scary"
    trajectory = token_trajectory(extractor, text, classifier, CLASSES, layer=3)
    with torch.no_grad():  # transformers' own states of every token at layer 3, projected by hand
        states = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states[3][0]
    expected = ((states - classifier.mean[1]) / classifier.std[1]) @ classifier.directions[1].T
    torch.testing.assert_close(trajectory.values, expected, atol=1e-4, rtol=1e-4)
    assert trajectory.tokens[0] == "[CLS]" and trajectory.tokens[-1] == "[SEP]" and "scary" in trajectory.tokens

    rows = list(csv.reader(trajectory.write_csv(tmp_path / "trajectory.csv").open()))
    assert rows[0] == ["token_index", "token", *CLASSES]
    assert len(rows) == 1 + len(trajectory.tokens) and rows[-1][:2] == [str(len(trajectory.tokens) - 1), "[SEP]"]
    assert float(rows[1][2]) == pytest.approx(float(expected[0, 0]), rel=1e-4)
    figure = plot_token_trajectory(trajectory, tmp_path / "trajectory.png")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000


def test_a_probes_trajectory_gives_each_token_a_probability_distribution(minilm):
    model, tokenizer = minilm
    extractor = HiddenStateExtractor(model, tokenizer, [6])
    probes = LayerProbes(1, 384, 4, kind="linear")
    probes.fit_standardisation(extractor(TEXTS))
    trajectory = token_trajectory(extractor, "we won, I am thrilled", probes, CLASSES, kind="probability")
    assert trajectory.layer == 6 and trajectory.values.shape == (len(trajectory.tokens), 4)
    torch.testing.assert_close(trajectory.values.sum(1), torch.ones(len(trajectory.tokens)))
    with pytest.raises(DirectionsError, match="needs a ProjectionClassifier, got LayerProbes"):
        token_trajectory(extractor, "hello", probes, CLASSES)
    with pytest.raises(DirectionsError, match=r"layer=3: the extractor reads layers \[6\]"):
        token_trajectory(extractor, "hello", ProjectionClassifier(1, 384, 4), CLASSES, layer=3)
