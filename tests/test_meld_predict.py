"""MELD's words-alone model used on a user's texts: registered by the training that makes it, predict on a text file
and on a table, the MLflow model giving the command's probabilities, bad input as one line with nothing written."""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from sklearn.metrics import f1_score

from affectlab.datasets.emotion_corpus import EMOTIONS
from affectlab.lab.cli import console
from affectlab.lab.meld import EXPERIMENT, main
from builders import emotion_texts, minilm_dir, write_meld_csv



def tiny_bert(folder):
    """A 1-layer BERT with MiniLM's tokenizer, saved as a model folder: loaded through from_pretrained, as a user's."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


MELD_ROWS = {"train": emotion_texts(8), "dev": emotion_texts(3, offset=8), "test": emotion_texts(3, offset=11)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> str:
    """A MELD folder of texts that say their emotion, the words alone trained for 6 epochs and tested (and exported)
    at the epoch best on dev."""
    folder = tmp_path_factory.mktemp("meld-predict")
    for split, rows in MELD_ROWS.items():
        write_meld_csv(folder / "meld" / f"{split}_sent_emo.csv", rows)
    tracking = f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}"
    main([f"model.text.name={tiny_bert(folder / 'tiny-bert')}", tracking, "tasks=[meld]", f"data.meld.dir={folder / 'meld'}", "approaches=[transcript]",
          "data.meld.train_size=null", "data.meld.dev_size=null", "data.meld.test_size=null", "trainer.max_epochs=6",
          "optim.lr_text=1e-3", "model.text.max_length=24", "data.batch_size=8", f"checkpoint_dir={folder / 'ckpt'}"])
    return tracking


def test_the_model_tested_and_exported_is_the_epoch_best_on_dev(trained, tmp_path):
    client = MlflowClient(trained.split("=", 1)[1])
    (child,) = [r for r in client.search_runs([client.get_experiment_by_name("meld").experiment_id])
                if r.info.run_name == "meld/transcript"]
    val = [m.value for m in client.get_metric_history(child.info.run_id, "val/f1_weighted")]
    best = int(np.argmax(val))
    assert best != len(val) - 1, f"the data must make an earlier epoch the best for this test to mean anything: {val}"
    assert child.data.tags["selected_epoch"].startswith(f"{best} ")
    dev = tmp_path / "dev.csv"
    pd.DataFrame({"text": [t for t, _ in MELD_ROWS["dev"]]}).to_csv(dev, index=False)
    main(["predict", f"input={dev}", f"output={tmp_path / 'out'}", trained])
    predicted = pd.read_csv(tmp_path / "out" / "predictions.csv")["label"]
    truth = [y for _, y in MELD_ROWS["dev"]]
    assert f1_score(truth, predicted, average="weighted") == pytest.approx(val[best], abs=1e-6)


class Said(logging.Handler):
    """What transformers' loggers said at WARNING and above."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_texts_from_a_file_or_a_table_get_emotion_probabilities(trained, tmp_path):
    lines = tmp_path / "texts.txt"
    lines.write_text("I am so happy today!\n\nWhy would you do that to me?\nThe bus leaves at nine.\n")
    said = Said()
    logging.getLogger("transformers").addHandler(said)
    try:
        main(["predict", f"input={lines}", f"output={tmp_path / 'a'}", trained])
    finally:
        logging.getLogger("transformers").removeHandler(said)
    assert not [m for m in said.messages if "not sharded" in m or "newly initialized" in m], said.messages
    table = pd.read_csv(tmp_path / "a" / "predictions.csv")
    assert list(table.columns) == ["text", *EMOTIONS, "label"]
    assert table["text"].tolist() == ["I am so happy today!", "Why would you do that to me?", "The bus leaves at nine."]
    np.testing.assert_allclose(table[list(EMOTIONS)].sum(axis=1), 1.0, atol=1e-5)

    rows = tmp_path / "texts.jsonl"
    rows.write_text("".join(f'{{"id": {i}, "utterance": "{t}"}}\n' for i, t in enumerate(table["text"])))
    main(["predict", f"input={rows}", "text_column=utterance", f"output={tmp_path / 'b'}", trained])
    np.testing.assert_allclose(pd.read_csv(tmp_path / "b" / "predictions.csv")[list(EMOTIONS)], table[list(EMOTIONS)],
                               atol=1e-6)

    mlflow.set_tracking_uri(trained.split("=", 1)[1])
    answer = mlflow.pyfunc.load_model("models:/affectlab-meld/latest").predict(pd.DataFrame({"text": table["text"]}))
    np.testing.assert_allclose(answer[list(EMOTIONS)], table[list(EMOTIONS)], atol=2e-6)


def test_an_empty_text_file_or_a_missing_column_is_one_line_and_nothing_is_written(trained, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    table = tmp_path / "t.csv"
    table.write_text("id,sentence\n1,hello\n")
    for source, said in ((empty, "holds no text"), (table, "no column 'text'"),
                         (tmp_path / "nowhere.txt", "no such file")):
        with pytest.raises(SystemExit):
            console(EXPERIMENT, ["predict", f"input={source}", f"output={tmp_path / 'out'}", trained])
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("meld:")]
        assert len(err) == 1 and said in err[0], err
        assert not (tmp_path / "out").exists()
