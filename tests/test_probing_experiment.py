"""The probing experiment on corpora it has never seen: official splits from files in any table format, GoEmotions'
folder (28 classes, Ekman's 7, multi-label), the toy corpus only with a loud warning; what a run logs (dataset inputs,
the splits' report, per-layer metrics with intervals, baselines as nested runs, the registered model); probes trained
to convergence (the MLP's early stopping); the studies on a tiny decoder (trajectories, steering, zero-shot,
malleability, persistence); and, on real MELD, the probes against scikit-learn, the majority class and TF-IDF."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow import MlflowClient
from transformers import AutoTokenizer

from affectlab.datasets.errors import DatasetError
from affectlab.lab.config import ConfigError, load_config
from affectlab.lab.probing import main
from affectlab.lab.probing.data import load_splits, sample_stratified
from builders import (
    CHAT_TEMPLATE,
    GOEMOTIONS,
    emotion_texts,
    minilm_dir,
    tiny_decoder,
    write_goemotions_folder,
    write_table,
)

QUICK = ["trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "report.resamples=200", "num_threads=1"]


def runs_of(workdir: Path) -> tuple[MlflowClient, object, list]:
    """The experiment's one top-level run and its nested runs."""
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("probing").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return client, parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def artifact_folder(workdir: Path, run) -> Path:
    """Where a run's artifacts are (the local store keeps them under ./mlartifacts)."""
    folder = Path(urlparse(run.info.artifact_uri).path)
    assert folder.is_relative_to(workdir)
    return folder


@pytest.fixture
def corpus_files(tmp_path: Path) -> dict[str, Path]:
    """Official splits as three formats with named columns; train holds a text twice with two emotions (a tie)."""
    train = emotion_texts(20) + [("I was furious about the flight, day 0.", "joy")]
    return {"train": write_table(tmp_path / "data" / "train.csv", train),
            "val": write_table(tmp_path / "data" / "dev.tsv", emotion_texts(5, offset=100)),
            "test": write_table(tmp_path / "data" / "test.jsonl", emotion_texts(8, offset=200))}


# --- the splits, without a model -------------------------------------------------------------------------------------


def test_tables_without_a_header_are_read_by_column_number(tmp_path: Path):
    train = write_table(tmp_path / "train.csv", emotion_texts(6), header=None, text_first=False)
    test = write_table(tmp_path / "test.tsv", emotion_texts(3, offset=50), header=None, text_first=False)
    cfg = load_config("probing", ["data.source=files", f"data.train={train}", f"data.test={test}",
                                  "data.text_column=1", "data.label_column=0", "data.val_fraction=0.2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the carving is announced, not news here
        splits, toy = load_splits(cfg.data)
    assert not toy and len(splits.test) == 21 and splits.test.emotions[0] == "anger"
    assert len(splits.train) + len(splits.val) == 42 and set(splits.val.class_counts().values()) == {1}
    assert splits.report["how"]["val"].startswith("carved from train")


def test_max_texts_keeps_the_class_distribution_and_every_class(tmp_path: Path):
    rows = [(text, emotion) for text, emotion in emotion_texts(40) if emotion in ("neutral", "joy")][:50]
    rows += emotion_texts(2, offset=300)  # 2 of each class: rare ones must survive the sample
    train = write_table(tmp_path / "train.csv", rows)
    cfg = load_config("probing", ["data.source=files", f"data.train={train}", "data.max_texts=20"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits, _ = load_splits(cfg.data)
    counts = splits.train.class_counts()
    assert all(count >= 1 for count in counts.values()) and 20 <= len(splits.train) <= 27
    assert counts["neutral"] > counts["anger"] and splits.report["splits"]["train"]["sampled_to"] == len(splits.train)
    sample = sample_stratified(splits.train, 7, seed=1)
    assert sorted(sample.texts) == sorted(dict.fromkeys(sample.texts))  # no text twice


def test_a_corpus_the_user_names_wrongly_is_one_clear_error(tmp_path: Path):
    missing = tmp_path / "nothing.csv"
    cfg = load_config("probing", ["data.source=files", f"data.train={missing}"])
    with pytest.raises(DatasetError, match=r"nothing\.csv: no such file; expected the train table"):
        load_splits(cfg.data)
    with pytest.raises(ConfigError, match="data.source=corpus.csv: expected one of auto | files"):
        load_config("probing", ["data.source=corpus.csv"])


# --- the experiment --------------------------------------------------------------------------------------------------


def test_official_splits_run_end_to_end_and_the_run_says_what_it_read(workdir: Path, corpus_files):
    summary = main(["data.source=files", *(f"data.{split}={path}" for split, path in corpus_files.items()), *QUICK])
    assert summary["test_examples"] == 56 and summary["train_examples"] == 139 and summary["val_examples"] == 35
    assert summary["num_classes"] == 7 and summary["best_layer"] in range(7)
    # the texts say their emotion: the probes must beat the majority class and chance by far
    assert summary["best/accuracy"] > 0.6 > 1 / 7 + 0.3 > summary["baseline/majority/accuracy"]
    for metric in ("accuracy", "f1_macro", "f1_weighted"):
        assert summary[f"best/{metric}_low"] <= summary[f"best/{metric}"] <= summary[f"best/{metric}_high"]
        assert f"projection/{metric}/layer_06" in summary and f"baseline/tfidf_logreg/{metric}_low" in summary

    client, run, children = runs_of(workdir)
    assert run.info.status == "FINISHED" and run.data.params["model.pooling_resolved"] == "mean"
    inputs = {d.dataset.name: json.loads(d.dataset.profile) for d in run.inputs.dataset_inputs}
    assert inputs == {"files/train": {"rows": 139, "toy": False}, "files/val": {"rows": 35, "toy": False},
                      "files/test": {"rows": 56, "toy": False}}
    # the duplicate with another emotion: counted and said how it was resolved
    assert run.data.metrics["data/train/conflicts_dropped_tied"] == 1 and run.data.metrics["data/train/rows"] == 141
    folder = artifact_folder(workdir, run)
    report = json.loads((folder / "splits_report.json").read_text())
    assert report["splits"]["train"]["conflict_rows_dropped"] == 2 and "tie drops the text" in report["dedup"]
    assert {"layers.csv", "accuracy_by_depth.png", "f1_weighted_by_depth.png", "f1_macro_by_depth.png",
            "probe_pca.png", "config.yaml"} <= {p.name for p in folder.iterdir()}
    with (folder / "layers.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["layer"]) for r in rows] == list(range(7))
    assert {"f1_weighted_low", "f1_weighted_high", "projection_f1_weighted", "f1_weighted_minus_best_low",
            "val_f1_weighted", "best_epoch", "weight_decay"} <= set(rows[0])
    best = rows[int(summary["best_layer"])]
    assert float(best["f1_weighted_minus_best"]) == 0.0
    assert float(best["f1_weighted"]) == pytest.approx(summary["best/f1_weighted"], abs=1e-4)
    assert {c.info.run_name: c.data.metrics["test/accuracy"] for c in children} == {
        "majority": pytest.approx(summary["baseline/majority/accuracy"]),
        "tfidf_logreg": pytest.approx(summary["baseline/tfidf_logreg/accuracy"])}
    assert client.get_registered_model("affectlab-probing").latest_versions[0].run_id == run.info.run_id


def test_a_balanced_training_set_leaves_the_majority_baseline_on_the_natural_majority(workdir: Path, tmp_path: Path):
    neutral = [row for row in emotion_texts(24, offset=500) if row[1] == "neutral"]
    train = write_table(tmp_path / "train.csv", emotion_texts(4) + neutral[:20])  # neutral 24 texts, the others 4
    test = write_table(tmp_path / "test.csv", emotion_texts(2, offset=200) + neutral[20:])  # neutral 6 of 18
    summary = main(["data.source=files", f"data.train={train}", f"data.test={test}", "data.balance_train=true",
                    "model.layers=[0,6]", *QUICK])
    # oversampled, every class is as large in training; the majority class is still the one the data has most of
    assert summary["baseline/majority/accuracy"] == pytest.approx(6 / 18)


def test_goemotions_folder_gives_its_28_classes(workdir: Path, tmp_path: Path):
    folder = write_goemotions_folder(tmp_path / "corpora" / "goemotions", per_class=2,
                                     extra={"train": [("lol and thanks a lot", ["amusement", "gratitude"])]})
    summary = main(["data.source=goemotions", f"data.path={folder}", "model.layers=[0.0,0.5,1.0]", *QUICK])
    assert summary["num_classes"] == 28 and summary["test_examples"] == 56 and summary["train_examples"] == 56
    _, run, _ = runs_of(workdir)
    report = json.loads((artifact_folder(workdir, run) / "splits_report.json").read_text())
    assert report["classes"] == list(GOEMOTIONS) and report["splits"]["train"]["dropped_several_classes"] == 1
    assert report["kept_labels"].startswith("single-label")
    folder = artifact_folder(workdir, run)
    assert [row.split(",")[0] for row in (folder / "layers.csv").read_text().split()[1:]] == ["0", "3", "6"]
    confusion = list(csv.reader((folder / f"confusion_layer_{int(summary['best_layer']):02d}.csv").open()))
    assert confusion[0][1:] == list(GOEMOTIONS) and sum(int(c) for row in confusion[1:] for c in row[1:]) == 56


def test_goemotions_in_ekman_classes_keeps_every_label_when_multi_label(workdir: Path, tmp_path: Path):
    extra = [("lol and thanks a lot", ["amusement", "gratitude"]), ("ugh, scary and gross", ["fear", "disgust"])]
    folder = write_goemotions_folder(tmp_path / "corpora" / "goemotions", per_class=1,
                                     extra={"train": extra, "test": extra})
    summary = main(["data.source=goemotions", f"data.path={folder}", "data.labels=ekman", "data.multi_label=true",
                    "model.layers=[1.0]", *QUICK])
    assert summary["num_classes"] == 7 and summary["test_examples"] == 30  # 28 + 2 comments, one per class or two
    assert "chance_accuracy" not in summary and 0.0 <= summary["best/f1_macro"] <= 1.0
    _, run, _ = runs_of(workdir)
    report = json.loads((artifact_folder(workdir, run) / "splits_report.json").read_text())
    assert report["multi_label"] and report["kept_labels"].startswith("multi-label: every label")
    assert report["splits"]["test"]["class_counts"]["joy"] == 12 + 1  # joy's 12 fine classes, and lol+thanks
    assert report["splits"]["test"]["class_counts"]["fear"] == 2 + 1  # fear, nervousness, and scary+gross


def test_the_mlp_probe_stops_early_and_logs_its_epochs(workdir: Path, corpus_files):
    summary = main(["data.source=files", *(f"data.{split}={path}" for split, path in corpus_files.items()),
                    "probe.kind=mlp", "probe.monitor=f1_weighted", "probe.patience=3", "trainer.max_epochs=60",
                    "model.layers=[0,3,6]", *QUICK])
    epochs = int(summary["epochs_run"])
    best = [int(summary[f"best_epoch/layer_{layer:02d}"]) for layer in (0, 3, 6)]
    assert epochs < 60 and max(best) == epochs - 3 and min(best) >= 1  # stopped 3 epochs after the last improvement
    client, run, _ = runs_of(workdir)
    curve = client.get_metric_history(run.info.run_id, "val/f1_weighted/layer_06")
    assert sorted(m.step for m in curve) == list(range(1, epochs + 1))
    first_best = max(sorted(curve, key=lambda m: m.step), key=lambda m: m.value)
    assert first_best.step == best[2]  # the kept epoch is the first with the best validation score
    assert summary["best/accuracy"] > summary["baseline/majority/accuracy"] + 0.3
    assert list((workdir / "checkpoints" / "probing").glob("*/probes/last.ckpt"))


def test_a_decoder_in_chat_format_with_every_study_on_the_toy_corpus(workdir: Path, tmp_path: Path, capsys):
    """Any transformers model folder runs through the experiment: a tiny random Qwen3 with a chat template; data.source
    =auto without MELD falls back to the toy corpus, loudly; trajectories, steering, zero-shot, malleability and
    persistence run (random weights: the figures mean nothing, their presence and range do)."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    folder = tmp_path / "tiny-qwen3"
    tiny_decoder("qwen3", tokenizer.vocab_size).save_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    (tmp_path / "no-meld").mkdir()
    with pytest.warns(UserWarning, match="TOY corpus"):
        summary = main([
            f"model.name={folder}", "data.source=auto", f"data.path={tmp_path / 'no-meld'}", "model.input_format=chat",
            "model.layers=[0.0,0.5,1.0]", "directions.trajectory_texts=[I am so angry,what a lovely day]",
            "steering.enabled=true", "steering.max_texts=2", "steering.alphas=[0.0,4.0]",
            "zero_shot.enabled=true", "zero_shot.max_texts=7", "zero_shot.max_new_tokens=4",
            "malleability.enabled=true", "malleability.max_texts=7", "malleability.max_new_tokens=4",
            "persistence.enabled=true", "persistence.train_texts=20", "persistence.test_texts=7",
            "persistence.max_new_tokens=8", "persistence.max_position=6", "persistence.positions_step=2", *QUICK,
        ])
    assert "MEAN NOTHING" in capsys.readouterr().err
    assert summary["test_examples"] == 14 and summary["zero_shot_texts"] == 7
    assert [key for key in summary if key.startswith("test/accuracy/")] == [
        "test/accuracy/layer_00", "test/accuracy/layer_02", "test/accuracy/layer_04"]
    assert {"malleability/none/mean_recall", "persistence/accuracy_at_000", "steering/joy_share/alpha_4"} <= set(
        summary)
    assert summary["steering/layer"] == 2
    assert summary["steering/joy_share/alpha_0"] != summary["steering/joy_share/alpha_4"]
    _, run, _ = runs_of(workdir)
    assert run.data.params["model.pooling_resolved"] == "last"  # a decoder: the last non-pad token
    assert run.data.tags["toy_data"].startswith("true") and "TOY" in run.data.tags["data.test"]
    assert all(json.loads(d.dataset.profile)["toy"] for d in run.inputs.dataset_inputs)
    folder = artifact_folder(workdir, run)
    names = {p.name for p in folder.iterdir()}
    assert {"trajectory_00.csv", "trajectory_01.png", "steering.csv", "steering.png", "malleability.csv",
            "persistence.png"} <= names
    with (folder / "steering.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    classes = ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")
    assert len(rows) == 4 and all(sum(float(r[c]) for c in classes) == pytest.approx(1.0, abs=1e-4) for r in rows)
    trajectory = list(csv.reader((folder / "trajectory_00.csv").open()))
    assert trajectory[0][:3] == ["token_index", "token", "anger"] and len(trajectory) > 4


# --- the science, on real MELD ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_on_real_meld_the_probes_match_scikit_learn_and_beat_both_baselines(shared_data: Path, workdir: Path):
    """MELD's train (the validation split carved from it) and dev as the test split, 300 texts of each drawn with
    the natural class distribution: every layer's linear probe scores at least scikit-learn's LogisticRegression on
    the same standardised features, and the best layer beats the majority class and TF-IDF + logistic regression."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from affectlab.lab.probing.data import extract_features, labels_of

    args = ["data.source=meld", f"data.path={shared_data / 'meld'}", "data.max_texts=300", *QUICK]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MELD's repairs and duplicates are counted, not news here
        summary = main(args)
        cfg = load_config("probing", args)
        splits, _ = load_splits(cfg.data)
        texts = list(dict.fromkeys(t for corpus in splits.splits().values() for t in corpus.texts))
        features, layers, info = extract_features(cfg, texts)  # from the run's cache
    assert info["shards_extracted"] == 0
    row = {text: i for i, text in enumerate(texts)}
    train_x, test_x = (features[:, [row[t] for t in c.texts]].numpy() for c in (splits.train, splits.test))
    train_y, test_y = labels_of(splits.train).numpy(), labels_of(splits.test).numpy()
    print(f"\nMiniLM on MELD (300 texts per split): majority {summary['baseline/majority/accuracy']:.3f}, TF-IDF "
          f"{summary['baseline/tfidf_logreg/accuracy']:.3f}")
    for layer in layers:
        scaler = StandardScaler().fit(train_x[layer])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            reference = LogisticRegression(max_iter=1000).fit(scaler.transform(train_x[layer]), train_y)
        theirs = reference.score(scaler.transform(test_x[layer]), test_y)
        ours = summary[f"test/accuracy/layer_{layer:02d}"]
        print(f"layer {layer}: probe {ours:.3f}, scikit-learn {theirs:.3f}")
        assert ours >= theirs - 0.01, (layer, ours, theirs)
    assert summary["best/f1_weighted_low"] > summary["baseline/majority/f1_weighted_high"]
    assert summary["best_minus_tfidf/f1_weighted_low"] > 0, summary
