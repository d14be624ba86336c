"""Text emotion splits from the files researchers have (`load_text_splits`): explicit files in any table format, MELD's
folder, the LLM-Emotion corpus; the deduplication rule, what splits share, carving, and every input a user can get
wrong. GoEmotions has its own file (test_goemotions.py)."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affectlab.datasets.emotion_corpus import EMOTIONS, CorpusWarning, clean_text
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.text_splits import DEDUP_RULE, load_text_splits
from builders import (assert_sound_splits, load_text_splits_quietly, write_csv, write_jsonl, write_meld_csv,
                      write_table)


def labelled_texts(per_class: int, prefix: str = "") -> list[tuple[str, str]]:
    return [(f"{prefix}{emotion} text {i}", emotion) for emotion in EMOTIONS for i in range(per_class)]


def write_tsv(path: Path, rows: list[tuple], header: list[str] | None = None) -> Path:
    lines = (["\t".join(header)] if header else []) + ["\t".join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- explicit files -------------------------------------------------------------------------------------------------


def test_headerless_tsv_with_numbered_columns_and_label_ids(tmp_path: Path):
    # columns: id, label id into ekman7, text; ids and names can be mixed, names in any case
    rows = [(f"id{i}", EMOTIONS.index(emotion) if i % 2 else emotion.upper(), text)
            for i, (text, emotion) in enumerate(labelled_texts(4))]
    train = write_tsv(tmp_path / "train.tsv", rows)
    test = write_tsv(tmp_path / "test.tsv", [("t", 3, "a joyful test"), ("u", "anger", "an angry test")])
    splits = load_text_splits_quietly(train=train, test=test, text_column=2, label_column=1, val_fraction=0)
    assert splits.val is None
    assert splits.train.texts[:2] == ["anger text 0", "anger text 1"]
    assert splits.train.class_counts() == dict.fromkeys(EMOTIONS, 4)
    assert splits.test.emotions == ["joy", "anger"]
    assert splits.test.origins == [f"{test}:1", f"{test}:2"]
    assert splits.report["how"] == {"train": f"read from {train}", "test": f"read from {test}"}


def test_csv_with_a_header_read_by_column_names(tmp_path: Path):
    train = write_csv(tmp_path / "train.csv", ["Sr No.", "Utterance", "Emotion"],
                      [[n, t, e] for n, (t, e) in enumerate(labelled_texts(10))])
    splits = load_text_splits_quietly(train=train, text_column="Utterance", label_column="Emotion")
    assert len(splits.train) + len(splits.val) + len(splits.test) == 70
    assert splits.test.class_counts() == dict.fromkeys(EMOTIONS, 1)
    assert splits.report["splits"]["train"]["rows"] == 70


def test_txt_with_tabs_is_read_as_tsv(tmp_path: Path):
    train = write_tsv(tmp_path / "train.txt", labelled_texts(3))
    test = write_tsv(tmp_path / "test.txt", [("so sad, really", "sadness"), ("wow", "surprise")])
    splits = load_text_splits_quietly(train=train, test=test, text_column=0, label_column=1, val_fraction=0)
    assert splits.test.texts == ["so sad, really", "wow"] and splits.test.emotions == ["sadness", "surprise"]
    assert len(splits.train) == 21


def test_jsonl_with_named_fields_and_a_json_list_of_labels_is_multi_label(tmp_path: Path):
    records = [{"sentence": t, "feelings": [e]} for t, e in labelled_texts(2)]
    records.append({"sentence": "bittersweet", "feelings": "joy,sadness"})
    records.append({"sentence": "furious and scared", "feelings": ["anger", "FEAR"]})
    train = write_jsonl(tmp_path / "train.jsonl", records)
    test = write_jsonl(tmp_path / "test.jsonl", [{"sentence": "ok", "feelings": [6]}])
    splits = load_text_splits_quietly(train=train, test=test, text_column="sentence", label_column="feelings", multi_label=True,
                   val_fraction=0)
    assert splits.multi_label and splits.train.multi_label
    index = splits.train.texts.index("bittersweet")
    assert splits.train.labels[index] == (EMOTIONS.index("joy"), EMOTIONS.index("sadness"))
    targets = splits.train.targets()
    assert targets.shape == (len(EMOTIONS) * 2 + 2, len(EMOTIONS)) and targets.dtype == np.float32
    assert targets[index].tolist() == [0, 0, 0, 1, 1, 0, 0]
    assert targets[splits.train.texts.index("furious and scared")].tolist() == [1, 0, 1, 0, 0, 0, 0]
    assert targets.sum() == len(EMOTIONS) * 2 + 4
    assert splits.test.emotions == [("neutral",)]
    # single-label: an item naming two classes is dropped and counted, not guessed
    single = load_text_splits_quietly(train=train, test=test, text_column="sentence", label_column="feelings", val_fraction=0)
    assert "bittersweet" not in single.train.texts
    assert single.report["splits"]["train"]["dropped_several_classes"] == 2


def test_several_files_for_one_split_are_pooled(tmp_path: Path):
    first = write_tsv(tmp_path / "a.tsv", labelled_texts(2) + [("shared", "joy")])
    second = write_tsv(tmp_path / "b.tsv", [("shared", "anger"), ("shared", "joy"), ("new one", "fear")])
    test = write_tsv(tmp_path / "test.tsv", [("something else", "joy")])
    splits = load_text_splits_quietly(train=[first, second], test=test, text_column=0, label_column=1, val_fraction=0)
    assert splits.report["files"]["train"] == f"{first}, {second}"
    assert splits.train.emotions[splits.train.texts.index("shared")] == "joy"  # 2 joy rows against 1 anger
    assert splits.report["splits"]["train"]["conflicts_resolved_by_majority"] == 1


# --- deduplication and what splits share ----------------------------------------------------------------------------


def test_duplicates_merge_conflicts_go_to_the_majority_and_ties_are_dropped(tmp_path: Path):
    rows = labelled_texts(2) + [
        ("Okay.", "neutral"), ("Okay.", "neutral"), ("okay.", "joy"),  # another text: case is kept
        ("What?", "surprise"), ("What?", "surprise"), ("What ?", "anger"), ("What?", "anger"),  # 2 to 1
        ("No.", "anger"), ("No.", "sadness"), (" No. ", "anger"), ("No.", "sadness"),  # 2 to 2 (spaces folded)
    ]
    train = write_tsv(tmp_path / "train.tsv", rows)
    test = write_tsv(tmp_path / "test.tsv", [("a test", "joy")])
    with pytest.warns(CorpusWarning, match=r"train \(read from .*train\.tsv\): 18 kept of 25 rows \{.*'conflicts_"):
        splits = load_text_splits(train=train, test=test, text_column=0, label_column=1, val_fraction=0)
    counts = splits.report["splits"]["train"]
    assert counts["rows"] == 25
    assert counts["duplicates_merged"] == 1 + 1  # one "Okay." and one "What?" surprise
    assert counts["conflicting_texts"] == 2
    assert counts["conflicts_resolved_by_majority"] == 1 and counts["conflicts_dropped_tied"] == 1
    assert counts["conflict_rows_dropped"] == 1 + 4  # the anger "What?", every "No."
    assert counts["rows"] == counts["kept"] + counts["duplicates_merged"] + counts["conflict_rows_dropped"]
    labelled = dict(zip(splits.train.texts, splits.train.emotions))
    assert labelled["What?"] == "surprise" and labelled["What ?"] == "anger" and "No." not in labelled
    assert labelled["Okay."] == "neutral" and labelled["okay."] == "joy"
    assert splits.report["dedup"] == DEDUP_RULE and "tie drops the text" in DEDUP_RULE


def test_test_texts_are_removed_from_train_and_counted(tmp_path: Path):
    train = write_tsv(tmp_path / "train.tsv", labelled_texts(3) + [("seen before", "joy"), ("also seen", "fear")])
    val = write_tsv(tmp_path / "val.tsv", [("also seen", "fear"), ("val only", "joy"), ("in val and test", "anger")])
    test = write_tsv(tmp_path / "test.tsv", [("seen before", "sadness"), ("in val and test", "anger"),
                                             ("fresh", "joy")])
    splits = load_text_splits_quietly(train=train, val=val, test=test, text_column=0, label_column=1)
    overlap = splits.report["overlap"]
    assert overlap["train_test_shared_texts"] == 1 and overlap["train_test_shared_with_other_label"] == 1
    assert overlap["train_val_shared_texts"] == 1 and overlap["val_test_shared_texts"] == 1
    assert "seen before" not in splits.train.texts and "also seen" not in splits.train.texts
    assert splits.val.texts == ["also seen", "val only"] and len(splits.test) == 3
    assert splits.report["splits"]["train"]["removed_shared_with_test"] == 1
    assert splits.report["splits"]["train"]["removed_shared_with_val"] == 1
    assert splits.report["splits"]["val"]["removed_shared_with_test"] == 1
    kept = load_text_splits_quietly(train=train, val=val, test=test, text_column=0, label_column=1, overlap="keep")
    assert "seen before" in kept.train.texts and kept.report["overlap"]["train_test_shared_texts"] == 1
    with pytest.raises(DatasetError, match=r"test\.tsv: 1 text\(s\) also in .*train\.tsv, e\.g\. \['seen before'\]"):
        load_text_splits(train=train, test=test, text_column=0, label_column=1, overlap="error", val_fraction=0)


def test_missing_splits_are_carved_from_train_stratified_and_seeded(tmp_path: Path):
    counts = {"anger": 40, "disgust": 20, "fear": 30, "joy": 100, "sadness": 50, "surprise": 60, "neutral": 300}
    rows = [(f"{e} {i}", e) for e, n in counts.items() for i in range(n)]
    corpus = write_tsv(tmp_path / "all.tsv", rows)
    splits = load_text_splits_quietly(train=corpus, text_column=0, label_column=1, seed=1)
    # 10% test, 10% validation (a share of the whole file), per class, rounded half up
    assert splits.test.class_counts() == {e: int(0.1 * n + 0.5) for e, n in counts.items()}
    assert splits.val.class_counts() == {e: int(0.1 * n + 0.5) for e, n in counts.items()}
    assert splits.train.class_counts() == {e: n - 2 * int(0.1 * n + 0.5) for e, n in counts.items()}
    assert not set(splits.train.texts) & set(splits.test.texts)
    assert not set(splits.val.texts) & set(splits.test.texts)
    assert splits.report["how"]["test"] == "carved from train: 0.1 of it, stratified by label, seed 1"
    assert splits.report["splits"]["train"]["carved_out_test"] == 60
    again = load_text_splits_quietly(train=corpus, text_column=0, label_column=1, seed=1)
    other = load_text_splits_quietly(train=corpus, text_column=0, label_column=1, seed=2)
    assert again.test.texts == splits.test.texts and other.test.texts != splits.test.texts
    assert splits.train.texts == [t for t, _ in rows if t in set(splits.train.texts)]  # file order kept


def test_training_keeps_the_natural_distribution_unless_balanced(tmp_path: Path):
    rows = [(f"joy {i}", "joy") for i in range(30)] + [(f"{e} {i}", e) for e in EMOTIONS if e != "joy"
                                                       for i in range(5)]
    train = write_tsv(tmp_path / "train.tsv", rows)
    test = write_tsv(tmp_path / "test.tsv", [("t", "joy")])
    natural = load_text_splits_quietly(train=train, test=test, text_column=0, label_column=1, val_fraction=0)
    assert natural.train.class_counts()["joy"] == 30 and natural.train.class_counts()["fear"] == 5
    balanced = load_text_splits_quietly(train=train, test=test, text_column=0, label_column=1, val_fraction=0, balance_train=True)
    assert set(balanced.train.class_counts().values()) == {30}
    assert balanced.report["splits"]["train"]["balanced_per_class"] == 30
    assert set(balanced.train.texts) == set(natural.train.texts)  # oversampled, nothing new


# --- MELD's folder --------------------------------------------------------------------------------------------------


def test_meld_folder_with_a_test_file_keeps_the_official_splits(tmp_path: Path):
    write_meld_csv(tmp_path / "train_sent_emo.csv", labelled_texts(3, "train ") + [("Oh, no, you didn\x92t!", "fear")])
    write_meld_csv(tmp_path / "dev_sent_emo.csv", labelled_texts(1, "dev "))
    write_meld_csv(tmp_path / "test_sent_emo.csv", labelled_texts(2, "test ") + [("train joy text 0", "joy")])
    splits = load_text_splits_quietly(source="meld", path=tmp_path)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (21 + 1 - 1, 7, 15)
    assert "Oh, no, you didn’t!" in splits.train.texts and splits.report["splits"]["train"]["fixed_encoding"] == 1
    assert splits.report["how"]["val"] == "MELD's dev_sent_emo.csv"
    assert splits.report["overlap"]["train_test_shared_texts"] == 1
    assert splits.train.origins[0] == f"{tmp_path / 'train_sent_emo.csv'}:2"


def test_meld_without_a_test_file_says_dev_is_the_test_split(tmp_path: Path):
    write_meld_csv(tmp_path / "train_sent_emo.csv", labelled_texts(10, "train "))
    write_meld_csv(tmp_path / "dev_sent_emo.csv", labelled_texts(2, "dev "))
    splits = load_text_splits_quietly(source="meld", path=tmp_path, val_fraction=0.2, seed=5)
    assert splits.test.texts == [t for t, _ in labelled_texts(2, "dev ")]
    assert "MELD's dev split is the test split" in splits.report["how"]["test"]
    assert splits.report["how"]["val"] == "carved from train: 0.2 of it, stratified by label, seed 5"
    assert splits.val.class_counts() == dict.fromkeys(EMOTIONS, 2)
    assert splits.train.class_counts() == dict.fromkeys(EMOTIONS, 8)
    assert "dev split is the test split" in splits.describe()
    assert json.loads(json.dumps(splits.report)) == splits.report  # loggable as it is (MLflow, a run's JSON)


def test_real_meld_splits_and_their_duplicates(shared_data: Path):
    """MELD's train and dev files as released: dev is the test split, validation 10% of train; every figure of the
    report, and the same figures computed here from the rows directly."""
    meld = shared_data / "meld"
    with pytest.warns(CorpusWarning, match="dev split is the test split"):
        splits = load_text_splits(source="meld", path=meld)
    train, test = splits.report["splits"]["train"], splits.report["splits"]["test"]
    assert (train["rows"], test["rows"]) == (9989, 1109)
    assert {k: train[k] for k in ("duplicates_merged", "conflicting_texts", "conflicts_resolved_by_majority",
                                  "conflicts_dropped_tied", "conflict_rows_dropped")} == {
        "duplicates_merged": 815, "conflicting_texts": 105, "conflicts_resolved_by_majority": 61,
        "conflicts_dropped_tied": 44, "conflict_rows_dropped": 288}
    assert {k: test[k] for k in ("duplicates_merged", "conflicting_texts", "conflicts_resolved_by_majority",
                                 "conflicts_dropped_tied", "conflict_rows_dropped")} == {
        "duplicates_merged": 50, "conflicting_texts": 8, "conflicts_resolved_by_majority": 5,
        "conflicts_dropped_tied": 3, "conflict_rows_dropped": 19}
    assert splits.report["overlap"]["train_test_shared_texts"] == 56
    assert splits.report["overlap"]["train_test_shared_with_other_label"] == 10
    assert train["carved_out_val"] == 889 and train["removed_shared_with_test"] == 56
    assert (len(splits.train), len(splits.val), len(splits.test)) == (7941, 882, 1040)
    # every row is accounted for: merged, dropped, carved out for validation, removed as shared with test, or kept
    kept = train["rows"] - train["duplicates_merged"] - train["conflict_rows_dropped"]
    assert kept == len(splits.train) + train["carved_out_val"] + train["removed_shared_with_test"]
    assert train["carved_out_val"] - splits.report["splits"]["val"]["removed_shared_with_test"] == len(splits.val)
    assert test["rows"] - test["duplicates_merged"] - test["conflict_rows_dropped"] == len(splits.test)
    # the same conflicts counted straight from the CSV rows
    for name, expected in (("train_sent_emo.csv", (105, 61, 44)), ("dev_sent_emo.csv", (8, 5, 3))):
        assert conflicts_by_hand([meld / name]) == expected
    assert all(n > 20 for n in splits.test.class_counts().values())


def conflicts_by_hand(paths: list[Path]) -> tuple[int, int, int]:
    """(texts with disagreeing rows, resolved by a strict majority, tied) of MELD files, from csv rows directly."""
    labels: dict[str, Counter] = {}
    for path in paths:
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                labels.setdefault(clean_text(row["Utterance"])[0], Counter())[row["Emotion"]] += 1
    conflicting = [votes.most_common(2) for votes in labels.values() if len(votes) > 1]
    tied = sum(first[1] == second[1] for first, second in conflicting)
    return len(conflicting), len(conflicting) - tied, tied


def test_real_meld_train_and_dev_pooled_report_their_conflicts(shared_data: Path):
    """Pooling train+dev (what the probing experiment did): the 362 rows whose emotion differs from their text's first
    row are 113 texts; the report says how each was resolved."""
    meld = shared_data / "meld"
    files = [meld / "train_sent_emo.csv", meld / "dev_sent_emo.csv"]
    splits = load_text_splits_quietly(train=files, text_column="Utterance", label_column="Emotion")
    pooled = splits.report["splits"]["train"]
    assert pooled["rows"] == 11098 and pooled["conflicting_texts"] == 113
    assert (pooled["conflicts_resolved_by_majority"], pooled["conflicts_dropped_tied"]) == (66, 47)
    assert conflicts_by_hand(files) == (113, 66, 47)
    first_label: dict[str, str] = {}
    other = 0
    for path in files:
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                text = clean_text(row["Utterance"])[0]
                other += first_label.setdefault(text, row["Emotion"]) != row["Emotion"]
    assert other == 362


def test_real_meld_splits_beat_the_majority_class_with_a_bag_of_words(shared_data: Path):
    """The splits' texts carry their labels: a bag-of-words naive Bayes fitted on train beats the majority class on
    test (macro-F1, as MELD is mostly neutral), and falls back near it when the training labels are shuffled."""
    splits = load_text_splits_quietly(source="meld", path=shared_data / "meld")
    majority = Counter(splits.train.labels).most_common(1)[0][0]
    baseline = macro_f1([majority] * len(splits.test), splits.test.labels)
    fitted = macro_f1(naive_bayes_predictions(splits.train.texts, splits.train.labels, splits.test.texts),
                      splits.test.labels)
    shuffled = list(splits.train.labels)
    np.random.default_rng(0).shuffle(shuffled)
    control = macro_f1(naive_bayes_predictions(splits.train.texts, shuffled, splits.test.texts), splits.test.labels)
    print(f"MELD test macro-F1: bag-of-words naive Bayes {fitted:.3f}, majority class {baseline:.3f}, "
          f"naive Bayes on shuffled labels {control:.3f}")
    assert fitted > 2 * baseline and fitted > control + 0.05


def macro_f1(predicted: list[int], labels: list[int]) -> float:
    """The mean over classes of F1 (0 for a class neither predicted nor present)."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    scores = []
    for k in range(len(EMOTIONS)):
        hits = np.sum((predicted == k) & (labels == k))
        scores.append(2 * hits / max(np.sum(predicted == k) + np.sum(labels == k), 1))
    return float(np.mean(scores))


def naive_bayes_predictions(train_texts, train_labels, test_texts, vocabulary: int = 2000) -> list[int]:
    """Multinomial naive Bayes over the ``vocabulary`` most common training words (add-one smoothing)."""
    words = Counter(w for text in train_texts for w in set(re.findall(r"[a-z']+", text.lower())))
    index = {w: i for i, (w, _) in enumerate(words.most_common(vocabulary))}

    def features(texts):
        x = np.zeros((len(texts), len(index)), dtype=np.float32)
        for row, text in enumerate(texts):
            for w in re.findall(r"[a-z']+", text.lower()):
                if w in index:
                    x[row, index[w]] += 1.0
        return x

    x, y = features(train_texts), np.asarray(train_labels)
    counts = np.stack([x[y == k].sum(0) for k in range(len(EMOTIONS))]) + 1.0
    log_likelihood = np.log(counts / counts.sum(1, keepdims=True))
    log_prior = np.log(np.bincount(y, minlength=len(EMOTIONS)) / len(y))
    return (features(test_texts) @ log_likelihood.T + log_prior).argmax(1).tolist()


# --- the LLM-Emotion corpus -----------------------------------------------------------------------------------------


def paper_records(per_class: int, prefix: str = "") -> list[dict]:
    sources = ("raw", "rewritten", "synthetic")
    return [{"text": f"{prefix}{e} utterance {i}", "emotion": e, "source": sources[i % 3]}
            for e in EMOTIONS for i in range(per_class)]


def test_llm_emotion_one_file_is_split_stratified_and_keeps_sources(tmp_path: Path):
    corpus = write_jsonl(tmp_path / "llm_emotion.jsonl", paper_records(10))
    splits = load_text_splits_quietly(source="llm_emotion", path=corpus, seed=3)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (56, 7, 7)
    assert splits.test.class_counts() == dict.fromkeys(EMOTIONS, 1)
    assert splits.report["how"]["train"] == f"the whole corpus {corpus}"
    assert set(splits.train.sources) == {"raw", "rewritten", "synthetic"}
    record = {r["text"]: r for r in paper_records(10)}[splits.test.texts[0]]
    assert splits.test.sources[0] == record["source"] and splits.test.emotions[0] == record["emotion"]


def test_llm_emotion_split_files_in_a_folder_and_as_csv(tmp_path: Path):
    write_jsonl(tmp_path / "train.jsonl", paper_records(3))
    write_csv(tmp_path / "validation.csv", ["text", "emotion", "source"],
              [[r["text"], r["emotion"], r["source"]] for r in paper_records(1, "val ")])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "a fresh one", "emotion": "Joy"}])  # no source: raw
    splits = load_text_splits_quietly(source="llm_emotion", path=tmp_path)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (21, 7, 1)
    assert splits.test.sources == ["raw"] and splits.test.emotions == ["joy"]
    same = load_text_splits_quietly(source="llm_emotion", train=tmp_path / "train.jsonl", val=tmp_path / "validation.csv",
                 test=tmp_path / "test.jsonl")
    assert same.val.texts == splits.val.texts


def test_llm_emotion_from_a_hugging_face_dataset_names_class_label_ids(monkeypatch: pytest.MonkeyPatch):
    """A dataset id goes through `datasets.load_dataset` (replaced by an in-memory release: nothing can be downloaded
    here); integer labels are named by the dataset's own ClassLabel order, not by ours."""
    import datasets

    own_order = ["neutral", "joy", "sadness", "anger", "fear", "disgust", "surprise"]
    features = datasets.Features({"text": datasets.Value("string"), "emotion": datasets.ClassLabel(names=own_order),
                                  "source": datasets.Value("string")})

    def split(prefix, per_class):
        return datasets.Dataset.from_dict(
            {"text": [f"{prefix} {name} {i}" for name in own_order for i in range(per_class)],
             "emotion": [k for k in range(7) for _ in range(per_class)],
             "source": ["synthetic"] * 7 * per_class}, features=features)

    release = datasets.DatasetDict({"train": split("train", 4), "test": split("test", 1)})
    monkeypatch.setattr(datasets, "load_dataset", lambda dataset_id: release)
    splits = load_text_splits_quietly(source="llm_emotion", path="someone/LLM-Emotion", val_fraction=0.25)
    assert splits.test.emotions == own_order
    assert all(text.split()[1] == emotion for text, emotion in zip(splits.train.texts, splits.train.emotions))
    assert splits.report["files"]["test"] == "someone/LLM-Emotion[test]" and len(splits.val) == 7


# --- what a user can get wrong --------------------------------------------------------------------------------------


def test_unknown_column_name_lists_the_columns(tmp_path: Path):
    train = write_csv(tmp_path / "train.csv", ["Utterance", "Emotion"], [["hi", "joy"]])
    with pytest.raises(DatasetError, match=r"train\.csv: no column 'text' for the text; has \['Utterance', 'Emot"):
        load_text_splits(train=train)
    jsonl = write_jsonl(tmp_path / "train.jsonl", [{"text": "hi", "label": "joy"}])
    with pytest.raises(DatasetError, match=r"train\.jsonl: no column 'emotion' for the label; has \['text', 'label'\]"):
        load_text_splits(train=jsonl)


def test_numbered_column_out_of_range_names_the_line(tmp_path: Path):
    train = write_tsv(tmp_path / "train.tsv", [("hi", "joy"), ("there", "fear")])
    with pytest.raises(DatasetError, match=r"train\.tsv:1: label column 2 is out of range; the row has 2 columns "
                                           r"\(0 to 1\)"):
        load_text_splits(train=train, text_column=0, label_column=2)


def test_a_named_column_in_a_headerless_file_or_a_number_in_jsonl_is_explained(tmp_path: Path):
    jsonl = write_jsonl(tmp_path / "train.jsonl", [{"text": "hi", "emotion": "joy"}])
    with pytest.raises(DatasetError, match=r"train\.jsonl:1: label column 1 is a number, but the rows are objects "
                                           r"with named fields \['emotion', 'text'\]"):
        load_text_splits(train=jsonl, label_column=1)
    tsv = write_tsv(tmp_path / "train.tsv", [("hi", "joy")])
    with pytest.raises(DatasetError, match=r"train\.tsv:1: label column 'emotion' is a name, but the rows have no "
                                           r"header; give its 0-based number, or header=True"):
        load_text_splits(train=tsv, text_column=0, label_column="emotion", header=False)


def test_unknown_label_names_file_line_value_and_the_classes(tmp_path: Path):
    train = write_tsv(tmp_path / "train.tsv", labelled_texts(3) + [("meh", "boredom")])
    with pytest.raises(DatasetError, match=r"train\.tsv:22: label 'boredom' \(in 'boredom'\) is not a class of "
                                           r"'ekman7'; expected one of \['anger', .*'neutral'\] \(any case\) or an "
                                           r"id 0 to 6"):
        load_text_splits(train=train, text_column=0, label_column=1)
    ids = write_tsv(tmp_path / "ids.tsv", [("hm", "7")])
    with pytest.raises(DatasetError, match=r"ids\.tsv:1: label '7'"):
        load_text_splits(train=ids, text_column=0, label_column=1)
    splits = load_text_splits_quietly(train=train, text_column=0, label_column=1, unknown="drop", val_fraction=0, test_fraction=0.2)
    assert splits.report["splits"]["train"]["dropped_unknown_label:boredom"] == 1


def test_a_header_line_read_as_data_is_an_unknown_label(tmp_path: Path):
    train = write_tsv(tmp_path / "train.tsv", labelled_texts(5), header=["text", "emotion"])
    with pytest.raises(DatasetError, match=r"train\.tsv:1: label 'emotion'"):
        load_text_splits(train=train, text_column=0, label_column=1)
    splits = load_text_splits_quietly(train=train, text_column=0, label_column=1, header=True, val_fraction=0, test_fraction=0.2)
    assert (len(splits.train), len(splits.test)) == (28, 7)


def test_a_split_too_small_to_carve_is_an_error(tmp_path: Path):
    train = write_tsv(tmp_path / "train.tsv", labelled_texts(2))
    with pytest.raises(DatasetError, match=r"train\.tsv: 14 texts leave no test text to carve \(test_fraction=0\.1"):
        load_text_splits(train=train, text_column=0, label_column=1)


def test_empty_files_and_files_without_usable_rows_are_errors(tmp_path: Path):
    empty = tmp_path / "train.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"train\.csv: no data rows"):
        load_text_splits(train=empty)
    header_only = write_csv(tmp_path / "header.csv", ["text", "emotion"], [])
    with pytest.raises(DatasetError, match=r"header\.csv: no data rows"):
        load_text_splits(train=header_only)
    blank = write_tsv(tmp_path / "blank.tsv", [("  ", "joy"), ("\xa0", "joy")])
    with pytest.raises(DatasetError, match=r"blank\.tsv: no usable text in 2 rows .*'dropped_empty_text': 2"):
        load_text_splits(train=blank, text_column=0, label_column=1)


def test_a_class_missing_from_train_is_an_error_and_from_test_is_reported(tmp_path: Path):
    no_fear = [(t, e) for t, e in labelled_texts(2) if e != "fear"]
    train = write_tsv(tmp_path / "train.tsv", no_fear)
    test = write_tsv(tmp_path / "test.tsv", [("x", "joy")])
    with pytest.raises(DatasetError, match=r"train\.tsv: class\(es\) \['fear'\] have no training example"):
        load_text_splits(train=train, test=test, text_column=0, label_column=1)
    full = write_tsv(tmp_path / "full.tsv", labelled_texts(2))
    with pytest.warns(CorpusWarning, match=r"classes without an example: \{'test': \['anger', "):
        splits = load_text_splits(train=full, test=test, text_column=0, label_column=1, val_fraction=0)
    assert splits.report["missing_classes"] == {"test": [e for e in EMOTIONS if e != "joy"]}


def test_rows_with_a_stray_delimiter_and_bad_arguments_are_errors(tmp_path: Path):
    broken = tmp_path / "train.tsv"
    broken.write_text("hi\tjoy\nthere\tfear\textra\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"train\.tsv:2: 3 cells; expected 2, as the first row has"):
        load_text_splits(train=broken, text_column=0, label_column=1)
    no_tabs = tmp_path / "train.txt"
    no_tabs.write_text("hi joy\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"train\.txt:1: no tab in 'hi joy'; a \.txt table must be tab-separated"):
        load_text_splits(train=no_tabs, text_column=0, label_column=1)
    with pytest.raises(DatasetError, match=r"train\.xlsx: unknown table format '\.xlsx'"):
        (tmp_path / "train.xlsx").write_bytes(b"PK")
        load_text_splits(train=tmp_path / "train.xlsx")
    with pytest.raises(DatasetError, match=r"absent\.csv: no such file; expected the train table"):
        load_text_splits(train=tmp_path / "absent.csv")
    with pytest.raises(DatasetError, match=r"source=files: no train= file"):
        load_text_splits(test=broken)
    with pytest.raises(DatasetError, match=r"source 'emotions': expected one of \['files', 'meld', 'goemotions'"):
        load_text_splits("emotions", train=broken)
    with pytest.raises(DatasetError, match=r"text column -1: expected a column name or a 0-based column number"):
        load_text_splits(train=broken, text_column=-1, label_column=1)
    with pytest.raises(DatasetError, match=r"val_fraction \+ test_fraction = 1\.0"):
        load_text_splits(train=broken, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(DatasetError, match=r"no test file and test_fraction=0"):
        load_text_splits(train=write_tsv(tmp_path / "ok.tsv", labelled_texts(2)), text_column=0, label_column=1,
                         test_fraction=0)


def test_meld_folder_errors(tmp_path: Path):
    write_meld_csv(tmp_path / "train_sent_emo.csv", labelled_texts(2))
    with pytest.raises(DatasetError, match=r"MELD file\(s\) \['dev_sent_emo\.csv'\] missing; has "
                                           r"\['train_sent_emo\.csv'\]"):
        load_text_splits("meld", path=tmp_path)
    write_meld_csv(tmp_path / "dev_sent_emo.csv", labelled_texts(1) + [("again", "joy")])
    rows = (tmp_path / "dev_sent_emo.csv").read_text(encoding="utf-8").splitlines()
    rows[-1] = rows[-1].replace(",1,2,", ",0,0,")  # the last utterance (dialogue 1, utterance 2) reuses the first one's ids
    (tmp_path / "dev_sent_emo.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"dev_sent_emo\.csv:9: Dialogue_ID '0', Utterance_ID '0' repeats"):
        load_text_splits("meld", path=tmp_path)
    with pytest.raises(DatasetError, match=r"labels='goemotions': MELD is labelled in ekman7"):
        load_text_splits("meld", path=tmp_path, labels="goemotions")
    with pytest.raises(DatasetError, match=r"source=meld reads its release folder \(path=\); \['train'\]="):
        load_text_splits("meld", train=tmp_path / "train_sent_emo.csv")
    with pytest.raises(DatasetError, match=r"nowhere: not a folder; source=meld expects"):
        load_text_splits("meld", path=tmp_path / "nowhere")


PIECES = ["joy", "JOY", "3", "7", "-1", "anger,fear", "", " ", "\t", "\n", ",", '"', "é", "\x92", "text", "emotion", "[",
          "]", "{", "}", ":", "\x00", "x", "1.0"]
TABLE_PIECES = st.sampled_from(PIECES)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(TABLE_PIECES, max_size=40).map("".join), st.sampled_from([".tsv", ".csv", ".jsonl", ".txt"]),
       st.sampled_from([(0, 1), ("text", "emotion")]), st.booleans())
def test_any_table_gives_splits_or_the_projects_own_error(tmp_path: Path, content, suffix, columns, multi_label):
    path = tmp_path / f"fuzz{suffix}"
    path.write_text(content, encoding="utf-8", errors="surrogatepass")
    try:
        splits = load_text_splits_quietly(train=path, text_column=columns[0], label_column=columns[1],
                                          multi_label=multi_label, test_fraction=0.5, val_fraction=0)
    except DatasetError:
        return
    assert_sound_splits(splits)
    assert splits.val is None and splits.multi_label == multi_label


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.lists(TABLE_PIECES, max_size=8).map("".join), st.sampled_from([*PIECES, *EMOTIONS])),
                max_size=10),
       st.sampled_from([".tsv", ".csv", ".jsonl"]), st.booleans(), st.sampled_from(["drop", "error"]))
def test_any_cells_in_a_well_formed_table_give_sound_splits(tmp_path: Path, extra, suffix, multi_label, unknown):
    """Every class twice, then rows of any text and label: the splits hold what splits must, or a label is named."""
    path = write_table(tmp_path / f"fuzz{suffix}", labelled_texts(2) + extra)
    try:
        splits = load_text_splits_quietly(train=path, text_column="text", label_column="emotion",
                                          multi_label=multi_label, unknown=unknown, test_fraction=0.5, val_fraction=0)
    except DatasetError as error:
        assert unknown == "error" and "is not a class of" in str(error)
        return
    assert_sound_splits(splits)


def test_llm_emotion_and_label_set_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", paper_records(10))
    with pytest.raises(DatasetError, match=r"give path= \(one corpus, a folder or a dataset id\) or train=/val=/test= "
                                           r"files, not both"):
        load_text_splits("llm_emotion", path=corpus, test=corpus)
    (tmp_path / "split").mkdir()
    write_jsonl(tmp_path / "split" / "train.jsonl", paper_records(2))
    write_jsonl(tmp_path / "split" / "train.json", paper_records(2))
    with pytest.raises(DatasetError, match=r"\['train\.jsonl', 'train\.json'\] could each be the train split"):
        load_text_splits("llm_emotion", path=tmp_path / "split")
    (tmp_path / "none").mkdir()
    with pytest.raises(DatasetError, match=r"none: no train file; expected train\.jsonl"):
        load_text_splits("llm_emotion", path=tmp_path / "none")
    with pytest.raises(DatasetError, match=r"absent\.jsonl: no such file or folder"):
        load_text_splits("llm_emotion", path=tmp_path / "absent.jsonl")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetError, match=r"'nobody-here/no-such-corpus' cannot be loaded"):
        load_text_splits("llm_emotion", path="nobody-here/no-such-corpus")
    with pytest.raises(DatasetError, match=r"label set 'plutchik' is neither a file nor a bundled label set"):
        load_text_splits("llm_emotion", path=corpus, labels="plutchik")
    source = write_jsonl(tmp_path / "scraped.jsonl", [{"text": "hi", "emotion": "joy", "source": "scraped"}])
    with pytest.raises(DatasetError, match=r"scraped\.jsonl:1: source 'scraped' is not one of \['raw', 'rewritten'"):
        load_text_splits("llm_emotion", train=source)
    with pytest.raises(DatasetError, match=r"llm_emotion/train: balancing by oversampling needs one label per text"):
        load_text_splits("llm_emotion", path=corpus, multi_label=True, balance_train=True)


def test_a_table_that_is_not_utf8_is_named(tmp_path: Path):
    latin = tmp_path / "train.tsv"
    latin.write_bytes("caf\xe9 au lait\tjoy\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"train\.tsv: byte 3 \(b'\\xe9'\) is not UTF-8"):
        load_text_splits(train=latin, text_column=0, label_column=1)
