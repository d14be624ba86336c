"""GoEmotions as released (`load_text_splits(source="goemotions")`): the official split TSVs with emotions.txt in its 28
classes or Ekman's 7, single- and multi-label; the raw rater CSVs aggregated and split; every file a user can get
wrong. `write_goemotions_folder` builds a small release folder for any test that needs one."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from affectlab.datasets.emotion_corpus import EMOTIONS, CorpusWarning
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.labelsets import load_label_set
from affectlab.datasets.text_splits import load_text_splits
from builders import (GOEMOTIONS, assert_sound_splits, load_text_splits_quietly, write_goemotions,
                      write_goemotions_folder)



quiet = functools.partial(load_text_splits_quietly, source="goemotions")


MIXED = {"train": [("lol thanks so much", ["amusement", "gratitude"]),  # both Ekman joy
                   ("great, now I'm scared", ["joy", "fear"]),  # Ekman joy and fear
                   ("ok", ["neutral"])]}


def test_official_splits_in_28_classes_keep_single_label_items(tmp_path: Path):
    root = write_goemotions_folder(tmp_path, per_class=2, extra=MIXED)
    with pytest.warns(CorpusWarning, match=r"'dropped_several_classes': 2"):
        splits = load_text_splits(source="goemotions", path=root)
    assert splits.classes == GOEMOTIONS and len(splits.classes) == 28
    assert (len(splits.train), len(splits.val), len(splits.test)) == (57, 56, 56)
    assert splits.train.class_counts() == {**dict.fromkeys(GOEMOTIONS, 2), "neutral": 3}
    assert splits.train.emotions[-1] == "neutral" and splits.train.texts[-1] == "ok"
    assert splits.report["how"] == {"train": "GoEmotions' train.tsv", "val": "GoEmotions' dev.tsv",
                                    "test": "GoEmotions' test.tsv"}
    assert splits.report["splits"]["train"]["rows"] == 59
    assert splits.train.origins[0] == f"{root / 'data' / 'train.tsv'}:1"


def test_ekman_labels_map_through_goemotions_grouping(tmp_path: Path):
    root = write_goemotions_folder(tmp_path, per_class=2, extra=MIXED)
    splits = quiet(path=root, labels="ekman")
    assert splits.classes == EMOTIONS
    groups = load_label_set("goemotions").groups
    expected = {ekman: 2 * len(fines) for ekman, fines in groups.items()}
    expected["joy"] += 1  # amusement + gratitude: one Ekman class, kept
    expected["neutral"] += 1
    assert splits.train.class_counts() == expected
    assert "great, now I'm scared" not in splits.train.texts  # joy and fear: two Ekman classes, dropped
    assert splits.report["splits"]["train"]["dropped_several_classes"] == 1
    assert splits.report["kept_labels"] == ("single-label: an item is kept when its labels name exactly one class of "
                                            "ekman7 once mapped through goemotions's grouping; the others are counted "
                                            "as dropped_several_classes")
    assert splits.test.class_counts() == {ekman: 2 * len(fines) for ekman, fines in groups.items()}


def test_multi_label_keeps_every_label_as_multi_hot_targets(tmp_path: Path):
    root = write_goemotions_folder(tmp_path, per_class=1, extra=MIXED)
    fine = quiet(path=root, multi_label=True)
    row = fine.train.texts.index("lol thanks so much")
    assert fine.train.labels[row] == (GOEMOTIONS.index("amusement"), GOEMOTIONS.index("gratitude"))
    targets = fine.train.targets()
    assert targets.shape == (28 + 3, 28)
    assert {GOEMOTIONS[k] for k in targets[row].nonzero()[0]} == {"amusement", "gratitude"}
    assert targets.sum(1).tolist() == [1.0] * 28 + [2.0, 2.0, 1.0]
    ekman = quiet(path=root, labels="ekman", multi_label=True)
    assert ekman.train.emotions[ekman.train.texts.index("great, now I'm scared")] == ("fear", "joy")
    assert ekman.train.emotions[ekman.train.texts.index("lol thanks so much")] == ("joy",)
    assert ekman.report["kept_labels"].startswith("multi-label: every label of an item is kept")
    assert ekman.report["multi_label"] is True and "dropped_several_classes" not in ekman.report["splits"]["train"]


def test_files_at_the_top_of_the_folder_and_duplicates_resolved(tmp_path: Path):
    extra = {"train": [("Thank you!", ["gratitude"]), ("Thank you!", ["gratitude"]), ("Thank you!", ["admiration"])],
             "test": [("Thank you!", ["gratitude"])]}
    root = write_goemotions_folder(tmp_path, per_class=1, extra=extra, top_level=True)
    splits = quiet(path=root)
    counts = splits.report["splits"]["train"]
    assert counts["conflicts_resolved_by_majority"] == 1 and counts["duplicates_merged"] == 1
    assert "Thank you!" not in splits.train.texts  # the test split has it: removed from train
    assert splits.report["overlap"]["train_test_shared_texts"] == 1


def test_raw_rater_files_are_aggregated_then_split_80_10_10(tmp_path: Path):
    ratings = []
    for emotion in GOEMOTIONS:
        for i in range(10):
            item = f"{emotion}-{i}"
            text = f"a comment that shows {emotion}, number {i}"
            other = GOEMOTIONS[(GOEMOTIONS.index(emotion) + 1) % 28]
            # two raters of three mark the emotion; the third marks another, which one rater is not enough for
            ratings += [(item, text, [emotion], False), (item, text, [emotion], False), (item, text, [other], False)]
    ratings += [("u", "what even is this", ["joy"], True), ("u", "what even is this", ["anger"], True)]
    ratings += [("d", "no agreement", ["joy"], False), ("d", "no agreement", ["anger"], False),
                ("d", "no agreement", ["fear"], False)]
    half = len(ratings) // 2
    write_goemotions(tmp_path / "goemotions_1.csv", ratings[:half])
    write_goemotions(tmp_path / "goemotions_2.csv", ratings[half:])
    with pytest.warns(CorpusWarning, match="carved from train"):
        splits = load_text_splits(source="goemotions", path=tmp_path, seed=4)
    assert splits.train.class_counts() == dict.fromkeys(GOEMOTIONS, 8)
    assert splits.val.class_counts() == dict.fromkeys(GOEMOTIONS, 1)
    assert splits.test.class_counts() == dict.fromkeys(GOEMOTIONS, 1)
    counts = splits.report["splits"]["train"]
    assert counts["rated_items"] == 282 and counts["unclear_ratings"] == 2
    assert counts["dropped_all_raters_unclear"] == 1 and counts["dropped_no_agreed_label"] == 1
    assert "at least 0.5 of the item's raters" in splits.report["aggregation"]
    assert splits.report["how"]["test"] == "carved from train: 0.1 of it, stratified by label, seed 4"
    # a lower bar keeps the lone rater's emotion too: every item then has two labels
    lenient = quiet(path=tmp_path, min_agreement=0.3, multi_label=True, val_fraction=0, test_fraction=0.5)
    assert {len(labels) for labels in lenient.train.labels + lenient.test.labels} == {2, 3}
    assert lenient.report["how"]["train"] == "GoEmotions' rater files, aggregated per item"


# --- what a user can get wrong --------------------------------------------------------------------------------------


def test_missing_or_broken_emotions_txt(tmp_path: Path):
    root = write_goemotions_folder(tmp_path / "a")
    (root / "data" / "emotions.txt").unlink()
    with pytest.raises(DatasetError, match=r"emotions\.txt not found in .*data or .*; expected it beside the split"):
        load_text_splits(source="goemotions", path=root)
    (root / "data" / "emotions.txt").write_text("admiration\namusement\nglee\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"emotions\.txt:3: emotion 'glee' is not a GoEmotions class"):
        load_text_splits(source="goemotions", path=root)
    (root / "data" / "emotions.txt").write_text("admiration\namusement\nadmiration\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"emotions\.txt:3: emotion 'admiration' repeats line 1"):
        load_text_splits(source="goemotions", path=root)


def test_a_label_id_outside_emotions_txt_names_file_line_and_range(tmp_path: Path):
    root = write_goemotions_folder(tmp_path)
    dev = root / "data" / "dev.tsv"
    dev.write_text(dev.read_text(encoding="utf-8") + "a fine comment\t3,28\tx1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"dev\.tsv:57: label id '28' \(in '3,28'\) is not an id of emotions\.txt; "
                                           r"expected comma-separated ids 0 to 27"):
        load_text_splits(source="goemotions", path=root)
    dev.write_text("a fine comment\tjoy\tx1\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"dev\.tsv:1: label id 'joy'"):
        load_text_splits(source="goemotions", path=root)


def test_missing_split_file_stray_tab_empty_folder_and_bad_label_set(tmp_path: Path):
    root = write_goemotions_folder(tmp_path / "a")
    (root / "data" / "dev.tsv").unlink()
    with pytest.raises(DatasetError, match=r"GoEmotions split file\(s\) \['.*dev\.tsv'\] missing"):
        load_text_splits(source="goemotions", path=root)
    root = write_goemotions_folder(tmp_path / "b")
    test = root / "data" / "test.tsv"
    test.write_text(test.read_text(encoding="utf-8") + "tab\tinside\t3\tx9\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"test\.tsv:57: 4 cells; expected 3, as the first row has"):
        load_text_splits(source="goemotions", path=root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: no GoEmotions files; expected data/train\.tsv"):
        load_text_splits(source="goemotions", path=tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"labels='basic8': GoEmotions gives its 28 classes"):
        load_text_splits(source="goemotions", path=root, labels="basic8")
    with pytest.raises(DatasetError, match=r"needs path=<its folder>"):
        load_text_splits(source="goemotions")


def test_a_class_absent_from_the_training_file_is_named(tmp_path: Path):
    root = write_goemotions_folder(tmp_path)
    train = root / "data" / "train.tsv"
    lines = train.read_text(encoding="utf-8").splitlines()
    grief = str(GOEMOTIONS.index("grief"))
    train.write_text("\n".join(line for line in lines if line.split("\t")[1] != grief) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"train\.tsv: class\(es\) \['grief'\] have no training example"):
        load_text_splits(source="goemotions", path=root)
    assert quiet(path=root, labels="ekman").train.class_counts()["sadness"] == 2 * 4  # grief's group keeps 4 others


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["hi", "\t", "\n", "3", "27", "28", ",", "-1", "joy", " ", '"', "\x00", "x"]),
                max_size=30).map("".join))
def test_any_split_file_gives_splits_or_the_projects_own_error(tmp_path: Path, content: str):
    root = write_goemotions_folder(tmp_path / "fuzz", per_class=1)
    (root / "data" / "test.tsv").write_text(content, encoding="utf-8")
    try:
        splits = quiet(path=root, multi_label=True)
    except DatasetError:
        return
    assert_sound_splits(splits)
    assert list(splits.classes) == list(GOEMOTIONS) and splits.multi_label


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.lists(st.sampled_from(["hi", "3", "28", ",", "joy", " ", '"', "\x00", "\x92", "é", ""]),
                                   max_size=6).map("".join),
                          st.sampled_from(["3", "27", "0,27", "3,3", "28", "-1", "joy", ""])), max_size=8))
def test_any_rows_after_a_valid_test_file_give_sound_splits(tmp_path: Path, rows: list[tuple[str, str]]):
    """Rows of any text and label ids, in GoEmotions' three columns: sound splits, or the bad row named."""
    root = write_goemotions_folder(tmp_path / "fuzz", per_class=1)
    test = root / "data" / "test.tsv"
    test.write_text(test.read_text(encoding="utf-8") + "".join(f"{text}\t{ids}\tf{n}\n"
                                                               for n, (text, ids) in enumerate(rows)),
                    encoding="utf-8")
    try:
        splits = quiet(path=root, multi_label=True)
    except DatasetError as error:
        assert re.search(r"test\.tsv:\d+: ", str(error)), error
        return
    assert_sound_splits(splits)
    assert len(splits.test) >= len(GOEMOTIONS)  # the valid file's texts are all kept


def test_the_ekman_grouping_holds_every_goemotions_class_once():
    groups = load_label_set("goemotions").groups
    grouped = [fine for fines in groups.values() for fine in fines]
    assert sorted(grouped) == sorted(GOEMOTIONS) and set(groups) == set(EMOTIONS)
