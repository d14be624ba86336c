"""The text-classifier modality: a transformers classifier's own labels mapped onto the 8 basic emotions, text tables,
and the experiment computing scene-text/transcript tables from texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.modality_tables import read_modality_table, read_text_table, write_text_table
from affectlab.lab.cexpr import main
from affectlab.lab.cexpr.data import resolve_root
from affectlab.lab.config import ConfigError, load_config
from affectlab.models.errors import ModelError
from affectlab.datasets.labelsets import load_label_set
from affectlab.models.text_emotion import basic_mapping, load_text_emotion_classifier
from builders import minilm_dir

BASIC_EMOTIONS = load_label_set("basic8").classes

MINILM = minilm_dir()
# j-hartmann/emotion-english-distilroberta-base's config.id2label
EKMAN = {0: "anger", 1: "disgust", 2: "fear", 3: "joy", 4: "neutral", 5: "sadness", 6: "surprise"}


@pytest.fixture(scope="module")
def ekman_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised BERT sequence classifier with the Ekman labels, saved as a Hub model folder."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("ekman")
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128, id2label=EKMAN,
                        label2id={name: i for i, name in EKMAN.items()})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_ekman_labels_map_onto_the_basic_emotions():
    matrix = basic_mapping(EKMAN, BASIC_EMOTIONS)
    assert matrix.shape == (7, 8) and torch.equal(matrix.sum(dim=1), torch.ones(7))
    mapped = {EKMAN[row]: BASIC_EMOTIONS[int(col)] for row, col in torch.nonzero(matrix).tolist()}
    assert mapped == {"anger": "Anger", "disgust": "Disgust", "fear": "Fear", "joy": "Happiness",
                      "neutral": "Neutral", "sadness": "Sadness", "surprise": "Surprise"}
    assert matrix[:, BASIC_EMOTIONS.index("Other")].sum() == 0  # no Ekman label is Other


def test_an_unmappable_label_is_an_error_unless_label_map_names_it():
    labels = {0: "joy", 1: "admiration"}
    with pytest.raises(ModelError, match=r"label 'admiration' \(id 1\).*label_map\['admiration'\]"):
        basic_mapping(labels, BASIC_EMOTIONS, model="SamLowe/roberta-base-go_emotions")
    matrix = basic_mapping(labels, BASIC_EMOTIONS, {"admiration": "Other"})
    assert matrix[1, BASIC_EMOTIONS.index("Other")] == 1
    with pytest.raises(ModelError, match=r"label_map\['admiration'\] = 'Pride'; expected one of"):
        basic_mapping(labels, BASIC_EMOTIONS, {"admiration": "Pride"})


def test_classifier_probabilities_are_its_softmax_summed_per_basic_emotion(ekman_classifier):
    model = load_text_emotion_classifier(str(ekman_classifier), BASIC_EMOTIONS)
    texts = ["I am so happy today!", "What? I did not expect that.", "Leave me alone, I am furious."]
    probs = model.predict(texts, batch_size=2)
    logits = model.classifier(texts)
    expected = torch.zeros(3, 8)
    for label, name in EKMAN.items():
        column = {"joy": "Happiness"}.get(name, name.capitalize())
        expected[:, BASIC_EMOTIONS.index(column)] += torch.softmax(logits, dim=-1)[:, label]
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))


def test_the_real_minilm_folder_has_no_emotion_labels_and_says_so():
    # all-MiniLM-L6-v2 is a sentence encoder: as a sequence classifier its labels are LABEL_0, LABEL_1
    with pytest.raises(ModelError, match=r"label 'LABEL_0' \(id 0\)"):
        load_text_emotion_classifier(str(MINILM), BASIC_EMOTIONS)
    model = load_text_emotion_classifier("all-MiniLM-L6-v2", BASIC_EMOTIONS, label_map={"LABEL_0": "Happiness", "LABEL_1": "Sadness"})
    probs = model.predict(["a sunny day", "a funeral"])
    assert probs.shape == (2, 8) and torch.all(probs[:, [0, 1, 2, 3, 6, 7]] == 0)


def test_text_table_round_trip_and_errors(tmp_path):
    path = write_text_table(tmp_path / "transcript.csv", ["01/0000", "01/0001"], ['he said "no, never"', ""])
    assert read_text_table(path) == (("01/0000", "01/0001"), ('he said "no, never"', ""))
    (tmp_path / "bad.csv").write_text("segment,text\na,b\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad.csv:1: header .*expected segment_id,text"):
        read_text_table(tmp_path / "bad.csv")
    (tmp_path / "twice.csv").write_text("segment_id,text\na,hi\na,ho\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"twice.csv:3: segment id 'a' repeats line 2"):
        read_text_table(tmp_path / "twice.csv")


TINY = [
    "data.synthetic.num_videos=2",
    "data.synthetic.num_basic_videos=6",
    "data.synthetic.afew_clips_per_class=1",
    "data.synthetic.seconds=[8,10]",
    "data.synthetic.frame_size=32",
    "data.synthetic.texts=true",
    "data.train_samples_per_epoch=null",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "early_stopping.patience=1",
    "ablation=false",
    "visual.modalities=[]",
]


def test_experiment_classifies_the_scene_and_transcript_texts(workdir, ekman_classifier):
    tracking = f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}"
    metrics = main([*TINY, tracking, f"text.classifier={ekman_classifier}"])
    for name in ("scene_text", "transcript"):
        assert 0.0 <= metrics[f"basic_val_f1/{name}"] <= 1.0
    (folder,) = (workdir / "tables" / "cexpr").iterdir()
    root = resolve_root(load_config("cexpr", TINY).data)
    for half in ("cexpr", "affwild2", "afew"):
        table = read_modality_table(folder / half / "transcript.csv")
        texts = dict(zip(*read_text_table(root / half / "texts" / "transcript.csv")))
        # one row per window, computed from its text; a window without text is missing, not guessed
        assert set(table.segment_ids) == set(texts)
        assert np.array_equal(table.present, np.array([bool(texts[s]) for s in table.segment_ids]))
        assert not table.present.all() and table.present.any()


def test_a_text_modality_without_its_texts_is_a_config_error(workdir):
    with pytest.raises(ConfigError, match=r"text.modalities has 'speech' but \[.*texts/speech.csv.*\] do not exist"):
        main([*TINY, "text.modalities=[speech]"])
