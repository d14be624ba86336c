"""The emotion corpora of the probing experiment: readers, repairs, filters, the paper's split, bad input."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

import numpy as np

from affectlab.datasets.emotion_corpus import (
    EMOTIONS,
    CorpusWarning,
    EmotionCorpus,
    balance_classes,
    fix_encoding,
    paper_split,
    read_corpus,
    read_goemotions,
    read_meld,
    stratified_sample,
)
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.labelsets import load_label_set
from builders import MELD_HEADER, write_goemotions, write_jsonl


def balanced_rows(per_class: int) -> list[dict]:
    return [
        {"text": f"{emotion} text number {i}", "emotion": emotion, "source": "raw"}
        for emotion in EMOTIONS
        for i in range(per_class)
    ]


def test_fix_encoding_repairs_c1_controls_and_mojibake():
    assert fix_encoding("it\x92s ok\x85 \x93fine\x94") == "it’s ok… “fine”"
    assert fix_encoding("itâ€™s") == "it’s"  # UTF-8 read as Windows-1252
    assert fix_encoding("itÂ’s") == "it’s"  # the C1 control itself, UTF-8-encoded then read as Windows-1252
    assert fix_encoding("Nestlé and naïve stay as they are") == "Nestlé and naïve stay as they are"
    assert fix_encoding("a\xa0b") == "a b"


def test_meld_reader_handles_quoted_commas_mojibake_and_comma_times(tmp_path: Path):
    path = tmp_path / "dev_sent_emo.csv"
    path.write_text(
        MELD_HEADER
        + '1,"Oh, no, you didn\x92t!",Ross,surprise,negative,0,0,3,5,"00:01:02,003","00:01:04,500"\n'
        + "2,Fine.,Monica,neutral,neutral,0,1,3,5,\"00:01:05,000\",\"00:01:06,000\"\n"
        + '3,"   ",Joey,joy,positive,0,2,3,5,"00:01:07,000","00:01:08,000"\n'
        + "4,Fine.,Chandler,anger,negative,0,3,3,5,\"00:01:09,000\",\"00:01:10,000\"\n",
        encoding="utf-8",
    )
    with pytest.warns(CorpusWarning, match="2 of 4 rows kept.*a repeated text keeps the emotion of its first row"):
        corpus = read_meld(path)
    assert corpus.texts == ["Oh, no, you didn’t!", "Fine."]
    assert corpus.emotions == ["surprise", "neutral"]
    assert corpus.report["fixed_encoding"] == 1
    assert corpus.report["dropped_empty"] == 1
    assert corpus.report["dropped_duplicate"] == 1
    assert corpus.report["duplicate_with_other_emotion"] == 1
    assert corpus.origins == [f"{path}:2", f"{path}:3"]


def test_real_meld_files_read_repaired_and_counted(shared_data: Path):
    meld = shared_data / "meld"
    with pytest.warns(CorpusWarning):
        corpus = read_meld([meld / "train_sent_emo.csv", meld / "dev_sent_emo.csv"])
    assert corpus.report["rows"] == 9989 + 1109
    assert corpus.report["kept"] == len(corpus) == corpus.report["rows"] - corpus.report["dropped_duplicate"]
    assert corpus.report["fixed_encoding"] > 2000  # "\x92" alone is in ~3,900 utterances
    assert not any(0x80 <= ord(ch) <= 0x9F for text in corpus.texts for ch in text)
    assert "You must’ve had your hands full." in corpus.texts
    assert len(set(corpus.texts)) == len(corpus)
    assert all(count > 250 for count in corpus.class_counts().values())


def test_jsonl_csv_parquet_and_json_read_to_the_same_corpus(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = balanced_rows(2) + [{"text": "rewritten one", "emotion": "Joy ", "source": "rewritten"}]
    jsonl = write_jsonl(tmp_path / "c.jsonl", rows)
    with (tmp_path / "c.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "emotion", "source"])
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    (tmp_path / "c.json").write_text(json.dumps(rows), encoding="utf-8")
    corpora = [read_corpus(tmp_path / name) for name in ("c.jsonl", "c.csv", "c.parquet", "c.json")]
    for corpus in corpora:
        assert corpus.texts == corpora[0].texts and corpus.labels == corpora[0].labels
        assert corpus.sources == corpora[0].sources
    assert corpora[0].emotions[-1] == "joy" and corpora[0].sources[-1] == "rewritten"
    assert len(read_corpus(jsonl)) == 15


def test_unknown_emotion_is_an_error_naming_file_and_line(tmp_path: Path):
    path = write_jsonl(tmp_path / "c.jsonl", balanced_rows(1) + [{"text": "meh", "emotion": "boredom"}])
    with pytest.raises(DatasetError, match=r"c\.jsonl:8: emotion 'boredom' is not one of"):
        read_corpus(path)
    with pytest.warns(CorpusWarning, match="boredom"):
        corpus = read_corpus(path, unknown="drop")
    assert corpus.report["dropped_unknown_label:boredom"] == 1 and len(corpus) == 7


def test_empty_corpus_and_missing_columns_are_errors(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"no usable example in 1 rows .*'dropped_empty': 1"):
        read_corpus(write_jsonl(tmp_path / "empty.jsonl", [{"text": "  ", "emotion": "joy"}]))
    with pytest.raises(DatasetError, match=r"no column \['text'\]"):
        read_corpus(write_jsonl(tmp_path / "cols.jsonl", [{"utterance": "hi", "emotion": "joy"}]))
    with pytest.raises(DatasetError, match="no such file"):
        read_corpus(tmp_path / "absent.csv")


def test_unreachable_hub_dataset_is_a_clear_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetError, match="'nobody-here/no-such-corpus'.*cannot be loaded"):
        read_corpus("nobody-here/no-such-corpus")


def test_goemotions_raters_mapped_to_ekman_by_majority(tmp_path: Path):
    path = write_goemotions(
        tmp_path / "goemotions_1.csv",
        [
            ("a", "lol that's great", ["amusement", "love"], False),  # both map to joy: one vote for joy
            ("a", "lol that's great", ["admiration"], False),
            ("a", "lol that's great", ["annoyance"], False),
            ("b", "whatever man", ["anger"], False),  # a tie between anger and neutral: dropped
            ("b", "whatever man", ["neutral"], False),
            ("c", "oh wow i did not know", ["realization", "curiosity"], False),
            ("c", "oh wow i did not know", ["joy"], True),  # a very unclear rating does not vote
        ],
    )
    with pytest.warns(CorpusWarning, match="dropped_no_majority"):
        corpus = read_goemotions(path)
    assert dict(zip(corpus.texts, corpus.emotions)) == {"lol that's great": "joy", "oh wow i did not know": "surprise"}
    assert corpus.report["dropped_no_majority"] == 1 and corpus.report["unclear_ratings"] == 1


def imbalanced_corpus(tmp_path: Path, counts: dict[str, int]):
    rows = [{"text": f"{e} {i}", "emotion": e} for e, n in counts.items() for i in range(n)]
    return read_corpus(write_jsonl(tmp_path / "imbalanced.jsonl", rows))


COUNTS = {"anger": 40, "disgust": 20, "fear": 30, "joy": 100, "sadness": 50, "surprise": 60, "neutral": 300}


def test_paper_split_balances_train_by_oversampling_and_test_by_cutting(tmp_path: Path):
    corpus = imbalanced_corpus(tmp_path, COUNTS)
    train, test = paper_split(corpus, seed=3)
    # joy, the largest emotion, keeps its 90 training texts; neutral (270) is cut to 90; the rest oversampled to 90
    assert set(train.class_counts().values()) == {90}
    assert Counter(train.texts)["joy 0"] <= 1 and len(set(t for t, e in zip(train.texts, train.emotions)
                                                          if e == "disgust")) == 18
    # disgust keeps 2 of its 20 texts for the test; every class is cut to 2
    assert set(test.class_counts().values()) == {2}
    assert not set(train.texts) & set(test.texts)
    assert (train.texts, test.texts) == tuple(part.texts for part in paper_split(corpus, seed=3))
    assert train.texts != paper_split(corpus, seed=4)[0].texts


def test_paper_split_needs_every_class(tmp_path: Path):
    corpus = imbalanced_corpus(tmp_path, {**COUNTS, "fear": 0})
    with pytest.raises(DatasetError, match=r"\{'fear': 0\}"):
        paper_split(corpus)


def test_stratified_sample_caps_each_class(tmp_path: Path):
    sample = stratified_sample(imbalanced_corpus(tmp_path, COUNTS), per_class=35, seed=0)
    assert sample.class_counts() == {e: min(n, 35) for e, n in COUNTS.items()}


def test_hub_reader_names_integer_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A dataset id goes through `datasets.load_dataset` (replaced here by an in-memory dataset with a ClassLabel
    column, as nothing can be downloaded)."""
    import datasets

    table = datasets.Dataset.from_dict(
        {"text": ["so happy", "so sad"], "label": [3, 4]},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=list(EMOTIONS))}),
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda dataset_id, split: table)
    corpus = read_corpus("someone/emotions", emotion_column="label")
    assert corpus.emotions == ["joy", "sadness"] and corpus.name == "someone/emotions:train"


# --- any label set, one or several labels per text ------------------------------------------------------------------


def test_corpus_defaults_to_the_ekman_classes_and_carries_another_label_set():
    ekman = EmotionCorpus(["so happy", "meh"], [3, 6], ["raw", "raw"])
    assert ekman.classes == EMOTIONS and ekman.emotions == ["joy", "neutral"]
    assert ekman.targets().tolist() == [[0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]]
    fine = load_label_set("goemotions").classes
    corpus = EmotionCorpus(["thanks!", "lol", "thank u"], [15, 1, 15], ["raw"] * 3, classes=fine)
    assert corpus.emotions == ["gratitude", "amusement", "gratitude"]
    assert corpus.class_counts() == {**dict.fromkeys(fine, 0), "gratitude": 2, "amusement": 1}
    assert corpus.subset([1]).classes == fine and corpus.subset([1]).emotions == ["amusement"]


def test_multi_label_corpus_gives_multi_hot_targets_and_counts_each_label():
    corpus = EmotionCorpus(["bittersweet", "furious", "fine"], [(3, 4), (0,), ()], ["raw"] * 3, multi_label=True)
    targets = corpus.targets()
    assert targets.dtype == np.float32 and targets.shape == (3, 7)
    assert targets.tolist() == [[0, 0, 0, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0], [0] * 7]
    assert corpus.emotions == [("joy", "sadness"), ("anger",), ()]
    assert corpus.class_counts() == {**dict.fromkeys(EMOTIONS, 0), "joy": 1, "sadness": 1, "anger": 1}
    with pytest.raises(ValueError, match="a multi-label corpus holds a tuple"):
        EmotionCorpus(["x"], [3], ["raw"], multi_label=True)
    with pytest.raises(ValueError, match="texts, labels, sources .* differ in length"):
        EmotionCorpus(["x", "y"], [3], ["raw"])
    with pytest.raises(DatasetError, match="balancing by oversampling needs one label per text"):
        balance_classes(corpus)


def test_balance_classes_oversamples_to_the_largest_non_neutral_class(tmp_path: Path):
    corpus = imbalanced_corpus(tmp_path, COUNTS)
    balanced = balance_classes(corpus, seed=1)
    assert set(balanced.class_counts().values()) == {100}  # joy's 100; neutral's 300 cut to it
    assert Counter(t for t, e in zip(balanced.texts, balanced.emotions) if e == "joy") == Counter(
        f"joy {i}" for i in range(100))
    assert set(t for t, e in zip(balanced.texts, balanced.emotions) if e == "disgust") == {
        f"disgust {i}" for i in range(20)}
    assert balanced.report["balanced_per_class"] == 100


def test_paper_split_works_in_another_label_set():
    names = ("calm", "glad", "cross")
    texts = [f"{n} {i}" for k, n in enumerate(names) for i in range(10 * (k + 1))]
    labels = [k for k, n in enumerate(names) for i in range(10 * (k + 1))]
    corpus = EmotionCorpus(texts, labels, ["raw"] * len(texts), classes=names)
    train, test = paper_split(corpus, seed=0)
    # no neutral class here: every class is brought to the largest, cross (27 training texts)
    assert train.class_counts() == dict.fromkeys(names, 27) and test.class_counts() == dict.fromkeys(names, 1)
    assert train.classes == names
