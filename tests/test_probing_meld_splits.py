"""MELD's text path in the meld experiment: train on train, validate on dev and report on test when MELD's test file
is there; without it, dev is the test split and validation is carved from train, said on the console and as an
MLflow tag; the synthetic stand-in when MELD is absent is announced loudly and logged as toy data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from affectlab.lab.config import load_config
from affectlab.lab.meld import data as meld_data
from affectlab.lab.meld import main
from affectlab.lab.meld.data import meld_splits
from builders import emotion_texts, write_meld_csv

TINY_BERT = "model.text.random_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, " \
            "intermediate_size: 64}"


@pytest.fixture
def meld_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "meld"
    write_meld_csv(folder / "train_sent_emo.csv", emotion_texts(6))
    write_meld_csv(folder / "dev_sent_emo.csv", emotion_texts(2, offset=50))
    return folder


def test_with_a_test_file_dev_validates_and_test_reports(meld_folder: Path):
    write_meld_csv(meld_folder / "test_sent_emo.csv", emotion_texts(3, offset=90))
    cfg = load_config("meld", [f"data.meld.dir={meld_folder}", "data.meld.train_size=null",
                               "data.meld.dev_size=null", "data.meld.test_size=null"])
    splits = meld_splits(cfg)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (42, 14, 21) and not splits.toy
    assert {s.segment.split("/")[0] for s in splits.val} == {"dev"} and splits.test[0].segment == "test/dia0_utt0"
    assert splits.how["test"].startswith("test_sent_emo.csv") and "validates" in splits.how["val"]


def test_without_a_test_file_dev_is_the_test_split_and_validation_is_carved_from_train(meld_folder: Path, capsys):
    cfg = load_config("meld", [f"data.meld.dir={meld_folder}", "data.meld.train_size=30", "data.meld.dev_size=null",
                               "data.val_fraction=0.2"])
    splits = meld_splits(cfg)
    assert [s.segment for s in splits.test] == [f"dev/dia{n // 5}_utt{n % 5}" for n in range(14)]
    assert (len(splits.train), len(splits.val)) == (24, 6)  # the 30 sampled from train, a fifth validates
    assert not {s.segment for s in splits.train} & {s.segment for s in splits.val}
    assert {s.segment.split("/")[0] for s in splits.train + splits.val} == {"train"}
    assert "dev split is the test split and validation is carved from train" in capsys.readouterr().out


def test_the_synthetic_stand_in_is_loud_and_logged_as_toy_data(workdir: Path, monkeypatch, capsys):
    monkeypatch.setattr(meld_data, "SHARED_DATA", workdir / "no-shared-data")
    with pytest.warns(UserWarning, match="SYNTHETIC utterances"):
        main([TINY_BERT, "tasks=[meld]", "approaches=[transcript]", "data.meld.train_size=30",
              "data.meld.dev_size=12", "trainer.max_epochs=1", "model.text.max_length=16", "data.batch_size=15"])
    assert "MEAN NOTHING" in capsys.readouterr().err
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("meld").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    inputs = {d.dataset.name: json.loads(d.dataset.profile) for d in parent.inputs.dataset_inputs}
    assert inputs == {"meld/train": {"rows": 26, "toy": True}, "meld/val": {"rows": 4, "toy": True},
                      "meld/test": {"rows": 12, "toy": True}}
    assert parent.data.tags["data.meld.test"] == "synthetic dev" and "TOY" in parent.data.tags["data.train"]
