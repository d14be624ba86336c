"""Train, validation and test splits of a text emotion corpus, read from the files researchers have, with a report of
everything that was read, repaired, dropped, merged and carved.

`load_text_splits` takes one of four sources:

- ``files``: ``train=``, ``val=``, ``test=`` tables (CSV, TSV or ``.txt`` with tabs, JSONL, JSON, Parquet), with or
  without a header, columns by name or 0-based number, labels as class names (any case) or ids into the label set; a
  label cell listing several (``joy,anger``, or a JSON list) is multi-label;
- ``meld``: MELD's folder (``train_sent_emo.csv``, ``dev_sent_emo.csv`` and ``test_sent_emo.csv`` when there is one);
- ``goemotions``: GoEmotions' folder, its official splits (or its raw rater files, split here), in its 28 classes or
  Ekman's 7 through its own grouping;
- ``llm_emotion``: the corpus of "Decoding Emotion in the Deep" (text, emotion, source), a file per split, one file,
  a folder or a Hugging Face dataset id.

Then the same steps for every source, each counted in ``report``:

1. texts repaired (`fix_encoding`) and white space folded; empty texts dropped; labels mapped to the classes (single-
   label: an item whose labels name more than one class is dropped, as ``dropped_several_classes``);
2. duplicates within a split: rows with the same text become one item. Same label: merged. Different labels: the
   label of most rows wins; a tie drops the text (``DEDUP_RULE``);
3. a split no file gave is carved from train, stratified by label, seeded (test first, then validation);
4. texts shared across splits are counted; by default removed from train (and from validation when in test);
5. training must have every class; a validation or test split without one is reported.

The natural class distribution is kept unless ``balance_train=True`` (the paper's oversampling, `balance_classes`).
"""

from __future__ import annotations

import random
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from affectlab.datasets import goemotions
from affectlab.datasets.emotion_corpus import (
    SOURCES as PAPER_SOURCES,
    CorpusWarning,
    EmotionCorpus,
    balance_classes,
    clean_text,
    unique_utterances,
)
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.labelsets import LabelSet, load_label_set
from affectlab.datasets.text_tables import FORMATS, Column, read_columns

TEXT_SOURCES = ("files", "meld", "goemotions", "llm_emotion")
SPLITS = ("train", "val", "test")
OVERLAP_POLICIES = ("remove", "keep", "error")
PER_CLASS = ("class_counts", "class_counts_before_balancing")  # a split's counts that are per class, not changes
LABEL_ALIASES = {"ekman": "ekman7"}
DEDUP_RULE = ("within a split, rows with the same text (after encoding repair and white-space folding) are one item: "
              "rows with the same label are merged; when their labels differ, the label of most rows is kept and a "
              "tie drops the text")
MELD_FILES = {"train": "train_sent_emo.csv", "val": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
# the paper's release: a split's file is <name>.<suffix>, the validation one under any of these names
LLM_EMOTION_NAMES = {"train": ("train",), "val": ("validation", "val", "dev"), "test": ("test",)}


@dataclass(frozen=True)
class _Row:
    text: str
    labels: tuple[int, ...]  # indices into the loader's classes, sorted, unique
    source: str
    where: str


@dataclass
class TextSplits:
    """The splits of one corpus in one set of ``classes``; ``val`` is None when there is none. ``report`` says what
    was read, fixed, dropped and merged per split, how each split was made, and what the splits share (see
    `load_text_splits`)."""

    train: EmotionCorpus
    val: EmotionCorpus | None
    test: EmotionCorpus
    classes: tuple[str, ...]
    multi_label: bool
    report: dict

    def splits(self) -> dict[str, EmotionCorpus]:
        return {name: corpus for name, corpus in (("train", self.train), ("val", self.val), ("test", self.test))
                if corpus is not None}

    def natural_train_counts(self) -> dict[str, int]:
        """Training items per class as the data holds them, before any balancing (the majority class is taken from
        these: after balancing every class is as large)."""
        return self.report["splits"]["train"].get("class_counts_before_balancing") or self.train.class_counts()

    def describe(self) -> str:
        """The report as lines of text, for a log."""
        r = self.report
        lines = [f"{r['source']}: {len(self.classes)} classes ({r['labels']}); {r['kept_labels']}"]
        for name, corpus in self.splits().items():
            counts = {k: v for k, v in r["splits"][name].items() if k not in ("kept", *PER_CLASS) and v}
            lines.append(f"  {name}: {len(corpus)} texts; {r['how'][name]}")
            if counts:
                lines.append(f"    {counts}")
            lines.append(f"    per class: {r['splits'][name]['class_counts']}")
            if "class_counts_before_balancing" in r["splits"][name]:
                lines.append(f"    per class before balancing: {r['splits'][name]['class_counts_before_balancing']}")
        if r["aggregation"]:
            lines.append(f"  raters: {r['aggregation']}")
        lines.append(f"  duplicates: {r['dedup']}")
        lines.append(f"  shared across splits: {r['overlap']}")
        if r["missing_classes"]:
            lines.append(f"  classes without an example: {r['missing_classes']}")
        return "\n".join(lines)


def load_text_splits(
    source: str = "files",
    *,
    path: str | Path | None = None,
    train: str | Path | Sequence[str | Path] | None = None,
    val: str | Path | Sequence[str | Path] | None = None,
    test: str | Path | Sequence[str | Path] | None = None,
    text_column: Column | None = None,
    label_column: Column | None = None,
    header: bool | None = None,
    labels: str | None = None,
    multi_label: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    overlap: str = "remove",
    unknown: str = "error",
    min_agreement: float = 0.5,
    balance_train: bool = False,
) -> TextSplits:
    """The train/validation/test splits of ``source`` (``files``, ``meld``, ``goemotions``, ``llm_emotion``).

    - ``path``: MELD's or GoEmotions' folder; for ``llm_emotion`` one corpus file, a folder of split files
      (``train``, ``validation``/``val``/``dev``, ``test`` with a table suffix) or a Hugging Face dataset id.
    - ``train``/``val``/``test``: a table per split (``files``, ``llm_emotion``), or a list of tables pooled into the
      split (duplicates across them resolved as within one file). A split no file gives is carved from
      train, stratified by label with ``seed``: test takes ``test_fraction`` of it, validation ``val_fraction`` (0: no
      validation split). MELD without a test file: dev is the test split and validation is carved from train.
    - ``text_column``/``label_column``: a column name or 0-based number (default: ``text``/``emotion``); ``header``:
      whether a CSV/TSV's first line names its columns (None: when a column is chosen by name).
    - ``labels``: a label set name or YAML path (default ``ekman7``; GoEmotions: ``goemotions`` or ``ekman``).
    - ``multi_label``: keep every label of an item (multi-hot `EmotionCorpus.targets`); False keeps items whose labels
      map to exactly one class and counts the rest as ``dropped_several_classes``.
    - ``overlap``: texts of test also in train (and of val in train, of test in val): ``remove`` them from the earlier
      split (default), ``keep`` them (counted), or ``error``.
    - ``unknown``: a label that is not a class: ``error`` (default) or ``drop`` (counted by label).
    - ``min_agreement``: GoEmotions' raw rater files: the share of an item's raters who must mark an emotion for it to
      be kept.
    - ``balance_train``: oversample training to the paper's balance (`balance_classes`); default: as the data is.

    ``report`` keys: ``source``, ``labels`` (the label set's name), ``classes``, ``multi_label``, ``kept_labels``
    (which items and labels are kept), ``files`` (split ->
    file or None when carved), ``how`` (split -> how it was made), ``aggregation`` (GoEmotions raters, else None),
    ``dedup`` (the rule), ``splits`` (split -> counts: ``rows``, ``fixed_encoding``, ``dropped_empty_text``,
    ``dropped_unknown_label:<label>``, ``dropped_several_classes``, ``dropped_no_label``, ``duplicates_merged``,
    ``conflicting_texts``, ``conflicts_resolved_by_majority``, ``conflicts_dropped_tied``, ``conflict_rows_dropped``,
    ``carved_out_val``, ``carved_out_test``, ``removed_shared_with_val``, ``removed_shared_with_test``,
    ``balanced_per_class``, ``kept``, ``class_counts``, with ``balance_train`` ``class_counts_before_balancing``; GoEmotions' rater files add ``rated_items``,
    ``unclear_ratings``, ``dropped_all_raters_unclear``, ``dropped_no_agreed_label``), ``overlap``
    (``<a>_<b>_shared_texts``, ``<a>_<b>_shared_with_other_label``, ``policy``) and ``missing_classes`` (split ->
    classes without an example).
    """
    if source not in TEXT_SOURCES:
        raise DatasetError(f"source {source!r}: expected one of {list(TEXT_SOURCES)}")
    if overlap not in OVERLAP_POLICIES:
        raise DatasetError(f"overlap={overlap!r}: expected one of {list(OVERLAP_POLICIES)}")
    if unknown not in ("error", "drop"):
        raise DatasetError(f"unknown={unknown!r}: expected 'error' or 'drop'")
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise DatasetError(f"{name}={fraction}: expected a fraction in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise DatasetError(f"val_fraction + test_fraction = {val_fraction + test_fraction}: expected less than 1, "
                           "something must be left to train on")
    files = {"train": train, "val": val, "test": test}
    read = _Reading(source, multi_label, unknown)
    if source == "files":
        if path is not None:
            raise DatasetError(f"path={path!s}: source=files reads train=, val=, test= (path is for meld, goemotions, "
                               "llm_emotion)")
        read.use_label_set(labels or "ekman7")
        columns = {"text": _default(text_column, "text"), "label": _default(label_column, "emotion")}
        read.tables(files, columns, {}, header)
    elif source == "meld":
        read.meld(_folder(path, source, files), labels)
    elif source == "goemotions":
        read.goemotions(_folder(path, source, files), labels, min_agreement)
    else:
        read.use_label_set(labels or "ekman7")
        columns = {"text": _default(text_column, "text"), "label": _default(label_column, "emotion")}
        read.llm_emotion(path, files, columns, header)
    return read.finish(val_fraction, test_fraction, seed, overlap, balance_train)


def _default(column: Column | None, name: str) -> Column:
    return name if column is None else column


def _folder(path, source: str, files: dict) -> Path:
    given = [split for split, file in files.items() if file is not None]
    if given:
        raise DatasetError(f"source={source} reads its release folder (path=); {given}= are for source=files or "
                           "llm_emotion")
    if path is None:
        raise DatasetError(f"source={source} needs path=<its folder>")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder; source={source} expects the dataset's folder")
    return folder


class _Reading:
    """The state of one `load_text_splits` call: the rows of each split read so far and their counts."""

    def __init__(self, source: str, multi_label: bool, unknown: str):
        self.source, self.multi_label, self.unknown = source, multi_label, unknown
        self.rows: dict[str, list[_Row]] = {}
        self.counts: dict[str, Counter] = {split: Counter() for split in SPLITS}
        self.files: dict[str, str | None] = {split: None for split in SPLITS}
        self.how: dict[str, str] = {}
        self.aggregation: str | None = None
        self.made_here: list[str] = []  # splits not read as their own file: carved, or another split standing in
        self.file_set: LabelSet | None = None
        self.to_class: dict[int, int] | None = None  # file label -> class; None: the same
        self.label_set: LabelSet | None = None
        self._names: dict[str, int] = {}  # a file label's name (lower case) -> its index in file_set

    # --- labels ---------------------------------------------------------------------------------------------------

    def use_label_set(self, name: str, file_set: LabelSet | None = None) -> None:
        """The loader's classes are those of label set ``name``; a file labelled in ``file_set`` (a set whose
        ``groups`` gather its classes into those of ``name``) is mapped through its grouping."""
        self.label_set = load_label_set(LABEL_ALIASES.get(name, name))
        self.file_set = file_set or self.label_set
        if self.file_set is not self.label_set:
            self.to_class = self.file_set.group_of()
        self._names = {name.lower(): index for index, name in enumerate(self.file_set.classes)}

    def parse_labels(self, value: object, where: str, counts: Counter) -> tuple[int, ...] | None:
        """The file labels a label cell names (class names in any case or ids, comma-separated or a JSON list);
        None when a label is unknown and unknown='drop' (counted)."""
        tokens = value if isinstance(value, (list, tuple)) else [value]
        found = []
        for token in tokens:
            for part in (token.split(",") if isinstance(token, str) else [token]):
                label = self._label(part)
                if label is None:
                    shown = part.strip() if isinstance(part, str) else part
                    if self.unknown == "drop":
                        counts[f"dropped_unknown_label:{shown if shown not in ('', None) else '<empty>'}"] += 1
                        return None
                    classes = list(self.file_set.classes)
                    raise DatasetError(
                        f"{where}: label {shown!r} (in {value!r}) is not a class of {self.file_set.name!r}; expected "
                        f"one of {classes} (any case) or an id 0 to {len(classes) - 1}, several separated by commas "
                        "(pass unknown='drop' to skip such rows)"
                    )
                found.append(label)
        return tuple(sorted(set(found)))

    def _label(self, token: object) -> int | None:
        if isinstance(token, bool) or token is None:
            return None
        if isinstance(token, float) and token.is_integer():
            token = int(token)
        if isinstance(token, int):
            return token if 0 <= token < len(self.file_set.classes) else None
        if not isinstance(token, str):
            return None
        token = token.strip()
        if token.isdigit():
            return int(token) if int(token) < len(self.file_set.classes) else None
        return self._names.get(token.lower())

    # --- rows -----------------------------------------------------------------------------------------------------

    def add_rows(self, split: str, rows: Iterable[tuple[object, tuple[int, ...] | None, object, str]]) -> None:
        """``(text, file labels or None when dropped, source, where)`` rows of ``split``, after the filters: text
        repaired and not empty, labels mapped to the classes, one class unless multi-label."""
        counts = self.counts[split]
        kept = self.rows.setdefault(split, [])
        for text, labels, source, where in rows:
            counts["rows"] += 1
            if labels is None:
                continue
            text, fixed = clean_text(text)
            counts["fixed_encoding"] += fixed
            if not text:
                counts["dropped_empty_text"] += 1
                continue
            if self.to_class is not None:
                labels = tuple(sorted({self.to_class[label] for label in labels}))
            if not labels:
                counts["dropped_no_label"] += 1
                continue
            if not self.multi_label and len(labels) > 1:
                counts["dropped_several_classes"] += 1
                continue
            source = "raw" if source is None or str(source).strip() == "" else str(source).strip().lower()
            if source not in PAPER_SOURCES:
                raise DatasetError(f"{where}: source {source!r} is not one of {list(PAPER_SOURCES)}")
            kept.append(_Row(text, labels, source, where))

    def tables(self, files: dict, columns: dict, optional: dict, header: bool | None) -> None:
        """The table(s) of each split given (train is required); several files for one split are pooled into it."""
        if files["train"] is None:
            raise DatasetError(f"source={self.source}: no train= file; expected train=PATH (val= and test= optional: "
                               "carved from train when absent)")
        for split, given in files.items():
            if given is None:
                continue
            paths = [Path(p).expanduser() for p in (given if isinstance(given, (list, tuple)) else [given])]
            if not paths:
                raise DatasetError(f"{split}=[]: expected a table, or several to pool")
            for path in paths:
                if path.is_dir():
                    raise DatasetError(f"{path}: a folder; expected the {split} table (CSV, TSV, JSONL, JSON or "
                                       "Parquet)")
                if not path.is_file():
                    raise DatasetError(f"{path}: no such file; expected the {split} table")
                self.add_rows(split, self._table_rows(path, columns, optional, header, self.counts[split]))
            self.files[split] = ", ".join(map(str, paths))
            self.how[split] = f"read from {self.files[split]}" + (" (pooled)" if len(paths) > 1 else "")

    def _table_rows(self, path: Path, columns: dict, optional: dict, header: bool | None, counts: Counter):
        for cells, where in read_columns(path, columns, optional=optional, header=header):
            yield cells["text"], self.parse_labels(cells["label"], where, counts), cells.get("source"), where

    # --- sources --------------------------------------------------------------------------------------------------

    def meld(self, folder: Path, labels: str | None) -> None:
        if LABEL_ALIASES.get(labels, labels) not in (None, "ekman7"):
            raise DatasetError(f"labels={labels!r}: MELD is labelled in ekman7 (its 7 emotions); expected ekman7")
        self.use_label_set("ekman7")
        missing = [name for split, name in MELD_FILES.items() if split != "test" and not (folder / name).is_file()]
        if missing:
            present = sorted(p.name for p in folder.iterdir())
            raise DatasetError(f"{folder}: MELD file(s) {missing} missing; has {present}; expected "
                               f"{list(MELD_FILES.values())} (test optional)")
        has_test = (folder / MELD_FILES["test"]).is_file()
        parts = {"train": "train", "val": "val", "test": "test"} if has_test else {"train": "train", "val": "test"}
        for file_split, split in parts.items():
            path = folder / MELD_FILES[file_split]
            self.files[split] = str(path)
            self.how[split] = f"MELD's {path.name}"
            rows = unique_utterances(read_columns(
                path, {"text": "Utterance", "label": "Emotion"},
                optional={"Dialogue_ID": "Dialogue_ID", "Utterance_ID": "Utterance_ID"}, header=True,
                what="MELD annotation file"))
            self.add_rows(split, ((cells["text"], self.parse_labels(cells["label"], where, self.counts[split]), None,
                                   where) for cells, where in rows))
        if not has_test:
            self.how["test"] += (f" (no {MELD_FILES['test']} in {folder}: MELD's dev split is the test split; "
                                 "validation is carved from train)")
            self.made_here.append("test")

    def goemotions(self, folder: Path, labels: str | None, min_agreement: float) -> None:
        target = LABEL_ALIASES.get(labels, labels) or "goemotions"
        if target not in ("goemotions", "ekman7"):
            raise DatasetError(f"labels={labels!r}: GoEmotions gives its 28 classes (goemotions) or Ekman's 7 through "
                               "its grouping (ekman); expected one of those")
        self.use_label_set(target, file_set=goemotions.GOEMOTIONS)
        splits, emotions, raters = goemotions.find_release(folder)
        if splits is not None:
            if emotions is None:
                raise DatasetError(f"{folder}: emotions.txt not found in {folder / 'data'} or {folder}; expected it "
                                   "beside the split files (label id k is its k-th line)")
            id_to_class = goemotions.read_emotion_names(emotions)
            for split, path in splits.items():
                self.files[split] = str(path)
                self.how[split] = f"GoEmotions' {path.name}"
                self.add_rows(split, ((text, labels, None, where) for text, labels, where
                                      in goemotions.read_split_tsv(path, id_to_class)))
            return
        if not raters:
            raise DatasetError(f"{folder}: no GoEmotions files; expected data/train.tsv, dev.tsv, test.tsv with "
                               "emotions.txt (the official splits), or the raw goemotions_N.csv rater files")
        counts = self.counts["train"]
        items = goemotions.read_rater_votes(raters, counts)
        counts["rated_items"] = len(items)
        self.aggregation = (f"{len(items)} rated items in {[p.name for p in raters]}: an emotion is kept when at least "
                            f"{min_agreement:g} of the item's raters marked it (raters who flagged the item very "
                            "unclear do not rate); no official split, so test and validation are carved from them")
        self.files["train"] = ", ".join(str(p) for p in raters)
        self.how["train"] = "GoEmotions' rater files, aggregated per item"
        self.add_rows("train", ((text, labels, None, where) for text, labels, where
                                in goemotions.agreed_labels(items, min_agreement, counts)))

    def llm_emotion(self, path, files: dict, columns: dict, header: bool | None) -> None:
        optional = {"source": "source"}
        if path is None:
            self.tables(files, columns, optional, header)
            return
        if any(file is not None for file in files.values()):
            raise DatasetError(f"source=llm_emotion: give path= (one corpus, a folder or a dataset id) or train=/val=/"
                               f"test= files, not both (path={path!s})")
        where = Path(path).expanduser()
        if where.is_file():
            self.tables({"train": where, "val": None, "test": None}, columns, optional, header)
            self.how["train"] = f"the whole corpus {where}"
        elif where.is_dir():
            found = {}
            for split, names in LLM_EMOTION_NAMES.items():
                candidates = [where / f"{name}{suffix}" for name in names for suffix in FORMATS if suffix != ".txt"]
                present = [p for p in candidates if p.is_file()]
                if len(present) > 1:
                    raise DatasetError(f"{where}: {[p.name for p in present]} could each be the {split} split; "
                                       "expected one")
                found[split] = present[0] if present else None
            if found["train"] is None:
                raise DatasetError(f"{where}: no train file; expected train.jsonl (or .csv, .json, .parquet), with "
                                   "test and validation files beside it or carved from it")
            self.tables(found, columns, optional, header)
        elif where.suffix.lower() in FORMATS or str(path).count("/") != 1:
            raise DatasetError(f"{where}: no such file or folder; expected the LLM-Emotion corpus file, a folder of "
                               "split files, or a Hugging Face dataset id (owner/name)")
        else:
            self._hub(str(path), columns)

    def _hub(self, dataset_id: str, columns: dict) -> None:
        import datasets

        try:
            release = datasets.load_dataset(dataset_id)
        except Exception as error:  # offline and uncached, unknown id: all end here
            raise DatasetError(
                f"Hugging Face dataset {dataset_id!r} cannot be loaded: {type(error).__name__}: {error}. Expected a "
                "reachable or cached dataset id, or a local corpus file or folder."
            ) from error
        for split, names in LLM_EMOTION_NAMES.items():
            name = next((n for n in names if n in release), None)
            if name is None:
                continue
            table = release[name]
            missing = [c for c in columns.values() if c not in table.column_names]
            if missing:
                raise DatasetError(f"{dataset_id}[{name}]: no column {missing}; has {table.column_names}")
            feature = table.features[columns["label"]]
            names_of = getattr(feature, "names", None)  # a ClassLabel: ints name its own classes
            counts = self.counts[split]
            self.files[split] = f"{dataset_id}[{name}]"
            self.how[split] = f"Hugging Face {dataset_id}, split {name}"
            self.add_rows(split, (
                (record[columns["text"]],
                 self.parse_labels(names_of[record[columns["label"]]] if names_of else record[columns["label"]],
                                   f"{dataset_id}[{name}] row {i}", counts),
                 record.get("source"), f"{dataset_id}[{name}] row {i}")
                for i, record in enumerate(table)))
        if "train" not in self.rows:
            raise DatasetError(f"{dataset_id}: no train split; has {list(release)}")

    # --- the common steps -----------------------------------------------------------------------------------------

    def finish(self, val_fraction: float, test_fraction: float, seed: int, overlap: str, balance: bool) -> TextSplits:
        for split, rows in self.rows.items():
            if not rows:
                raise DatasetError(f"{self.files[split]}: no usable text in {self.counts[split]['rows']} rows "
                                   f"(counts: {_nonzero(self.counts[split])})")
            self.rows[split] = merge_duplicates(rows, self.counts[split])
        self._check_classes()  # before carving: a class the file lacks is named as such
        rng = random.Random(seed)
        pool = self.rows["train"]
        carve = {split: fraction for split, fraction in (("test", test_fraction), ("val", val_fraction))
                 if split not in self.rows}
        if "test" in carve and test_fraction == 0:
            raise DatasetError(f"{self.files['train']}: no test file and test_fraction=0; expected a test file or a "
                               "test_fraction > 0 to carve one from train")
        share_left = 1.0
        for split, fraction in carve.items():
            if fraction == 0:
                continue
            pool, carved = carve_stratified(pool, fraction / share_left, rng)
            if not carved:
                raise DatasetError(f"{self.files['train']}: {len(pool)} texts leave no {split} text to carve "
                                   f"({split}_fraction={fraction:g} of each label, rounded); expected more texts, a "
                                   f"{split} file{' or val_fraction=0' if split == 'val' else ''}")
            share_left -= fraction
            self.rows[split] = carved
            self.made_here.append(split)
            self.counts["train"][f"carved_out_{split}"] = len(carved)
            self.how[split] = (f"carved from train: {fraction:g} of it, stratified by label"
                               f"{' combination' if self.multi_label else ''}, seed {seed}")
        self.rows["train"] = pool
        overlap_report = self._overlap(overlap)
        for split, rows in self.rows.items():
            if not rows:
                raise DatasetError(f"{self.files[split]}: no {split} text left once the texts of later splits were "
                                   f"removed ({_nonzero(self.counts[split])}); expected texts of its own "
                                   "(overlap='keep' keeps shared ones)")
        missing = self._check_classes()
        corpora = {split: self._corpus(split) for split in SPLITS if split in self.rows}
        if balance:
            natural = corpora["train"].class_counts()
            corpora["train"] = balance_classes(corpora["train"], seed=seed)
            self.counts["train"]["balanced_per_class"] = corpora["train"].report["balanced_per_class"]
            self.how["train"] += "; balanced by oversampling (the paper's)"
        report = {
            "source": self.source,
            "labels": self.label_set.name,
            "classes": list(self.label_set.classes),
            "multi_label": self.multi_label,
            "kept_labels": self._kept_labels(),
            "files": dict(self.files),
            "how": {split: self.how[split] for split in corpora},
            "aggregation": self.aggregation,
            "dedup": DEDUP_RULE,
            "splits": {split: {**_nonzero(self.counts[split]), "kept": len(corpus),
                               "class_counts": corpus.class_counts()} for split, corpus in corpora.items()},
            "overlap": overlap_report,
            "missing_classes": missing,
        }
        if balance:  # what the data holds, for what depends on it (the majority class)
            report["splits"]["train"]["class_counts_before_balancing"] = natural
        splits = TextSplits(corpora["train"], corpora.get("val"), corpora["test"], self.label_set.classes,
                            self.multi_label, report)
        changed = {split: {k: v for k, v in counts.items() if k not in ("rows", "kept", *PER_CLASS)}
                   for split, counts in report["splits"].items()}
        if any(changed.values()) or missing or self.made_here:
            parts = [f"{split} ({report['how'][split]}): "
                     + (f"{counts['kept']} kept of {counts['rows']} rows" if "rows" in counts else
                        f"{counts['kept']} texts")
                     + (f" {changed[split]}" if changed[split] else "")
                     for split, counts in report["splits"].items()]
            if missing:
                parts.append(f"classes without an example: {missing}")
            warnings.warn(f"{self.source}: " + " | ".join(parts), CorpusWarning, stacklevel=3)
        return splits

    def _overlap(self, policy: str) -> dict:
        texts = {split: {row.text: row.labels for row in rows} for split, rows in self.rows.items()}
        report: dict = {"policy": policy}
        for earlier, later in (("train", "val"), ("train", "test"), ("val", "test")):
            if earlier not in texts or later not in texts:
                continue
            shared = [text for text in texts[later] if text in texts[earlier]]
            report[f"{earlier}_{later}_shared_texts"] = len(shared)
            report[f"{earlier}_{later}_shared_with_other_label"] = sum(
                texts[earlier][t] != texts[later][t] for t in shared)
            if shared and policy == "error":
                raise DatasetError(
                    f"{self.files[later] or later}: {len(shared)} text(s) also in {self.files[earlier] or earlier}, "
                    f"e.g. {shared[:3]}; expected splits without shared texts (overlap='remove' drops them from "
                    f"{earlier}, 'keep' keeps them)")
        if policy == "remove":
            for earlier, laters in (("train", ("val", "test")), ("val", ("test",))):
                if earlier not in self.rows:
                    continue
                for later in laters:
                    if later not in texts:
                        continue
                    before = len(self.rows[earlier])
                    self.rows[earlier] = [row for row in self.rows[earlier] if row.text not in texts[later]]
                    if before - len(self.rows[earlier]):
                        self.counts[earlier][f"removed_shared_with_{later}"] = before - len(self.rows[earlier])
        return report

    def _kept_labels(self) -> str:
        mapped = f" once mapped through {self.file_set.name}'s grouping" if self.to_class is not None else ""
        if self.multi_label:
            return f"multi-label: every label of an item is kept{mapped} (multi-hot targets)"
        return (f"single-label: an item is kept when its labels name exactly one class of {self.label_set.name}"
                f"{mapped}; the others are counted as dropped_several_classes")

    def _check_classes(self) -> dict[str, list[str]]:
        classes = self.label_set.classes
        present = {split: {label for row in rows for label in row.labels} for split, rows in self.rows.items()}
        absent = {split: [classes[k] for k in range(len(classes)) if k not in labels]
                  for split, labels in present.items()}
        if absent["train"]:
            raise DatasetError(
                f"{self.files['train']}: class(es) {absent['train']} have no training example (after the counted "
                f"drops: {_nonzero(self.counts['train'])}); expected every class of {self.label_set.name!r} in train "
                "(use a label set with only the classes the data has)")
        return {split: names for split, names in absent.items() if names}

    def _corpus(self, split: str) -> EmotionCorpus:
        rows = self.rows[split]
        return EmotionCorpus(
            [row.text for row in rows],
            [row.labels if self.multi_label else row.labels[0] for row in rows],
            [row.source for row in rows],
            name=f"{self.source}/{split}",
            report=Counter(_nonzero(self.counts[split])),
            classes=self.label_set.classes,
            multi_label=self.multi_label,
            origins=[row.where for row in rows],
        )


def _nonzero(counts: Counter) -> dict:
    return {key: value for key, value in counts.items() if value}


def merge_duplicates(rows: Sequence[_Row], counts: Counter) -> list[_Row]:
    """One row per text (`DEDUP_RULE`), in the order texts first appear. Counts ``duplicates_merged`` (rows folded
    into a kept row with the same label), ``conflicting_texts`` (texts whose rows disagree),
    ``conflicts_resolved_by_majority``, ``conflicts_dropped_tied`` and ``conflict_rows_dropped`` (rows whose label
    lost or tied). Rows in = kept + duplicates_merged + conflict_rows_dropped."""
    groups: dict[str, list[_Row]] = {}
    for row in rows:
        groups.setdefault(row.text, []).append(row)
    kept = []
    for group in groups.values():
        votes = Counter(row.labels for row in group)
        if len(votes) == 1:
            counts["duplicates_merged"] += len(group) - 1
            kept.append(group[0])
            continue
        counts["conflicting_texts"] += 1
        (winner, most), (_, second) = votes.most_common(2)
        if most == second:
            counts["conflicts_dropped_tied"] += 1
            counts["conflict_rows_dropped"] += len(group)
            continue
        counts["conflicts_resolved_by_majority"] += 1
        counts["duplicates_merged"] += most - 1
        counts["conflict_rows_dropped"] += len(group) - most
        kept.append(next(row for row in group if row.labels == winner))
    return kept


def carve_stratified(rows: Sequence[_Row], fraction: float, rng: random.Random) -> tuple[list[_Row], list[_Row]]:
    """``(rest, carved)``: from each label (multi-label: each label combination), ``fraction`` of its rows rounded
    half up, leaving at least one; both parts keep the rows' order."""
    by_label: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        by_label[row.labels].append(index)
    carved: set[int] = set()
    for label in sorted(by_label):
        indices = by_label[label][:]
        rng.shuffle(indices)
        carved.update(indices[:min(int(fraction * len(indices) + 0.5), len(indices) - 1)])
    return ([row for i, row in enumerate(rows) if i not in carved], [row for i, row in enumerate(rows) if i in carved])
