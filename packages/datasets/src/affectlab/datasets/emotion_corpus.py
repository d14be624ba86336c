"""Text emotion corpora: texts with their classes (the 7 of "Decoding Emotion in the Deep" by default, any label set's
otherwise, one or several per text) and where each came from.

`EmotionCorpus` holds one corpus or split. Readers of one pooled corpus: the paper's own files (JSONL, CSV, Parquet) or
a Hugging Face dataset id (`read_corpus`); GoEmotions' raw rater files mapped to the 7 classes (`read_goemotions`);
MELD's text annotation CSVs (`read_meld`). They drop empty texts and repeated texts (the first row of a text is kept,
and a repeat with another emotion is counted as ``duplicate_with_other_emotion``), count every fix or drop in the
corpus' `report` and announce it with a `CorpusWarning`. Then the paper's split (`paper_split`): 90/10 stratified, the
training part balanced by oversampling (`balance_classes`), the test part cut to the smallest class.

Official train/validation/test splits, GoEmotions' own splits and classes, and the majority rule for conflicting
duplicates are `affectlab.datasets.text_splits.load_text_splits`.
"""

from __future__ import annotations

import random
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.goemotions import read_rater_votes
from affectlab.datasets.labelsets import load_label_set
from affectlab.datasets.text_tables import read_records

EMOTIONS: tuple[str, ...] = load_label_set("ekman7").classes
SOURCES = ("raw", "rewritten", "synthetic")

# GoEmotions' own Ekman grouping of its 27 emotions (Demszky et al., ACL 2020, ekman_mapping.json), plus neutral.
GOEMOTIONS_TO_EKMAN: dict[str, tuple[str, ...]] = load_label_set("goemotions").groups

# Windows-1252 punctuation (’ … — “ ”) that reached the file as the C1 control characters U+0080–U+009F.
_C1 = re.compile("[\x80-\x9f]")
# UTF-8 bytes read as Windows-1252: "â€™" for ’, "Ã©" for é, "Â " for a no-break space.
_MOJIBAKE = re.compile("[ÂÃâ][\x80-\xbf\u0152-\u2122]")


class CorpusWarning(UserWarning):
    """Items of a corpus were fixed or dropped; the counts are in the corpus' report."""


@dataclass
class EmotionCorpus:
    """Parallel lists: ``texts[i]`` has the class ``classes[labels[i]]`` and came from ``sources[i]``.

    Multi-label (``multi_label=True``): ``labels[i]`` is a sorted tuple of class indices, and `targets` its multi-hot
    rows. ``classes`` defaults to the 7 Ekman classes (`EMOTIONS`); ``origins[i]``, when known, is the ``file:line``
    the item was read from.
    """

    texts: list[str]
    labels: list[int] | list[tuple[int, ...]]
    sources: list[str]
    name: str = "corpus"
    report: Counter = field(default_factory=Counter)
    classes: tuple[str, ...] = EMOTIONS
    multi_label: bool = False
    origins: list[str] | None = None

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        sizes = {len(self.texts), len(self.labels), len(self.sources), *([len(self.origins)] if self.origins else [])}
        if len(sizes) != 1:
            raise ValueError(f"{self.name}: texts, labels, sources (and origins) differ in length: {sorted(sizes)}")
        if self.multi_label and not all(isinstance(label, tuple) for label in self.labels):
            raise ValueError(f"{self.name}: a multi-label corpus holds a tuple of class indices per item")
        if not self.multi_label and not all(isinstance(label, int) for label in self.labels):
            raise ValueError(f"{self.name}: a single-label corpus holds one class index per item")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def emotions(self) -> list:
        """Class names per item (a tuple of names per item when multi-label)."""
        if self.multi_label:
            return [tuple(self.classes[k] for k in label) for label in self.labels]
        return [self.classes[label] for label in self.labels]

    def class_counts(self) -> dict[str, int]:
        """Items per class (multi-label: the items that have the class among theirs)."""
        counts = Counter(k for label in self.labels for k in (label if self.multi_label else (label,)))
        return {name: counts.get(index, 0) for index, name in enumerate(self.classes)}

    def targets(self) -> np.ndarray:
        """[N, C] float32: multi-hot rows (one-hot when single-label)."""
        targets = np.zeros((len(self), len(self.classes)), dtype=np.float32)
        for row, label in enumerate(self.labels):
            targets[row, list(label) if self.multi_label else label] = 1.0
        return targets

    def subset(self, indices: Sequence[int], name: str | None = None) -> "EmotionCorpus":
        return EmotionCorpus(
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.sources[i] for i in indices],
            name=name or self.name,
            report=Counter(self.report),
            classes=self.classes,
            multi_label=self.multi_label,
            origins=[self.origins[i] for i in indices] if self.origins is not None else None,
        )


def fix_encoding(text: str) -> str:
    """Repairs Windows-1252 characters stored as C1 controls ("it\\x92s" → "it’s") and UTF-8 read as Windows-1252
    ("itâ€™s" → "it’s"); turns no-break spaces into spaces. Returns the text unchanged when nothing is broken."""
    if _MOJIBAKE.search(text):
        try:
            text = text.encode("cp1252").decode("utf-8")
        except UnicodeError:
            pass  # not a clean round trip: leave it to the C1 repair below
    if _C1.search(text):
        text = _C1.sub(lambda match: _decode_c1(match.group()), text)
    return text.replace("\xa0", " ")


def clean_text(text: object) -> tuple[str, bool]:
    """The text every reader keeps: encoding repaired (`fix_encoding`), runs of white space made one space, stripped;
    and whether a repair changed it (what readers count as ``fixed_encoding``)."""
    original = "" if text is None else str(text)
    repaired = fix_encoding(original)
    return " ".join(repaired.split()), repaired != original.replace("\xa0", " ")


def _decode_c1(char: str) -> str:
    try:
        return char.encode("latin-1").decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are unassigned in Windows-1252
        return ""


def _label_index(value: object, where: str, unknown: str, report: Counter) -> int | None:
    name = str(value).strip().lower() if value is not None else ""
    if name in EMOTIONS:
        return EMOTIONS.index(name)
    if unknown == "drop":
        report[f"dropped_unknown_label:{name or '<empty>'}"] += 1
        return None
    raise DatasetError(f"{where}: emotion {value!r} is not one of {list(EMOTIONS)} (pass unknown='drop' to skip)")


def build_corpus(
    rows: Iterable[tuple[str, object, object, str]],
    name: str,
    *,
    unknown: str = "error",
    report: Counter | None = None,
) -> EmotionCorpus:
    """The corpus of ``(text, emotion, source, where)`` rows, after the filters every reader applies.

    Texts are repaired (`fix_encoding`) and stripped; empty ones and exact duplicates (same text: the first one is kept,
    and a duplicate with another emotion is also counted as conflicting) are dropped and counted.
    """
    if unknown not in ("error", "drop"):
        raise ValueError(f"unknown={unknown!r}: expected 'error' or 'drop'")
    report = Counter() if report is None else report
    texts, labels, sources, origins = [], [], [], []
    first_label: dict[str, int] = {}
    rows_seen = 0
    for text, emotion, source, where in rows:
        rows_seen += 1
        label = _label_index(emotion, where, unknown, report)
        if label is None:
            continue
        source = "raw" if source is None or str(source).strip() == "" else str(source).strip().lower()
        if source not in SOURCES:
            raise DatasetError(f"{where}: source {source!r} is not one of {list(SOURCES)}")
        repaired, fixed = clean_text(text)
        if fixed:
            report["fixed_encoding"] += 1
        if not repaired:
            report["dropped_empty"] += 1
            continue
        if repaired in first_label:
            report["dropped_duplicate"] += 1
            if first_label[repaired] != label:
                report["duplicate_with_other_emotion"] += 1
            continue
        first_label[repaired] = label
        texts.append(repaired)
        labels.append(label)
        sources.append(source)
        origins.append(where)
    if not texts:
        raise DatasetError(f"{name}: no usable example in {rows_seen} rows (report: {dict(report)})")
    corpus = EmotionCorpus(texts, labels, sources, name=name, report=report, origins=origins)
    corpus.report["rows"] = rows_seen
    corpus.report["kept"] = len(texts)
    changed = {k: v for k, v in report.items() if k not in ("rows", "kept")}
    if changed:
        rule = " (a repeated text keeps the emotion of its first row)" if report["dropped_duplicate"] else ""
        warnings.warn(f"{name}: {len(texts)} of {rows_seen} rows kept; {changed}{rule}", CorpusWarning, stacklevel=3)
    return corpus


def _columns_rows(records, columns: dict[str, str | None], origin: str, label_names: Sequence[str] | None = None):
    first = True
    for record, where in records:
        missing = [c for c in (columns["text"], columns["emotion"]) if c not in record]
        if missing:
            # the first record sets the columns; a later one without them is a broken line
            raise DatasetError(
                f"{origin if first else where}: no column {missing}; has {sorted(map(str, record))} "
                "(set the column names)"
            )
        first = False
        emotion = record[columns["emotion"]]
        if label_names is not None and isinstance(emotion, int) and 0 <= emotion < len(label_names):
            emotion = label_names[emotion]
        source = record.get(columns["source"]) if columns["source"] else None
        yield record[columns["text"]], emotion, source, where


def read_corpus(
    source: str | Path,
    *,
    split: str = "train",
    text_column: str = "text",
    emotion_column: str = "emotion",
    source_column: str = "source",
    unknown: str = "error",
) -> EmotionCorpus:
    """The paper's corpus format from a ``.jsonl``/``.csv``/``.parquet`` file, or a Hugging Face dataset id.

    A dataset id is loaded with `datasets.load_dataset` (from the network or the local cache); integer labels are
    named by the dataset's ClassLabel feature. A missing ``source`` column means every text is ``raw``.
    """
    columns = {"text": text_column, "emotion": emotion_column, "source": source_column}
    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir():
            raise DatasetError(f"{path}: a folder; expected a .jsonl, .csv or .parquet file")
        return build_corpus(_columns_rows(read_records(path), columns, str(path)), path.name, unknown=unknown)
    if path.suffix.lower() in (".jsonl", ".json", ".csv", ".tsv", ".parquet"):
        raise DatasetError(f"{path}: no such file")
    return _read_hub(str(source), split, columns, unknown)


def _read_hub(dataset_id: str, split: str, columns: dict[str, str], unknown: str) -> EmotionCorpus:
    import datasets

    try:
        table = datasets.load_dataset(dataset_id, split=split)
    except Exception as error:  # offline and uncached, unknown id, missing split: all end here
        raise DatasetError(
            f"Hugging Face dataset {dataset_id!r} (split {split!r}) cannot be loaded: {type(error).__name__}: "
            f"{error}. Expected a reachable or cached dataset id, or a local .jsonl/.csv/.parquet path."
        ) from error
    feature = table.features.get(columns["emotion"])
    label_names = getattr(feature, "names", None)
    records = ((record, f"{dataset_id}[{split}] row {i}") for i, record in enumerate(table))
    return build_corpus(
        _columns_rows(records, columns, dataset_id, label_names), f"{dataset_id}:{split}", unknown=unknown
    )


def read_meld(paths: str | Path | Sequence[str | Path], *, unknown: str = "error") -> EmotionCorpus:
    """MELD's ``*_sent_emo.csv`` (columns ``Utterance``, ``Emotion``, …) as one corpus; several files are concatenated.

    The real files quote commas inside utterances and in the ``00:16:16,059`` times, and store Windows-1252
    punctuation as C1 controls (``\\x92`` for ’): the csv module handles the first, `fix_encoding` the second (counted
    as ``fixed_encoding``). MELD repeats short utterances ("Okay.", "Yeah."): the repeats are dropped and counted.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise DatasetError("read_meld: no file given; expected MELD's *_sent_emo.csv files")

    def rows():
        for path in map(Path, paths):
            if not path.is_file():
                raise DatasetError(f"{path}: no such file; expected MELD's train/dev/test_sent_emo.csv")
            records = unique_utterances(read_records(path)) if path.suffix.lower() == ".csv" else _bad_suffix(path)
            yield from _columns_rows(records, {"text": "Utterance", "emotion": "Emotion", "source": None}, str(path))

    name = "+".join(Path(p).stem for p in paths)
    return build_corpus(rows(), name, unknown=unknown)


def unique_utterances(records: Iterable[tuple[dict, str]]) -> Iterable[tuple[dict, str]]:
    """MELD's records; a (Dialogue_ID, Utterance_ID) pair seen before in the same file (a file pasted twice) is an
    error. Records without both ids pass unchecked."""
    seen: dict[tuple[str, str], str] = {}
    for record, where in records:
        if record.get("Dialogue_ID") is not None and record.get("Utterance_ID") is not None:
            key = (str(record["Dialogue_ID"]).strip(), str(record["Utterance_ID"]).strip())
            if key in seen:
                raise DatasetError(
                    f"{where}: Dialogue_ID {key[0]!r}, Utterance_ID {key[1]!r} repeats {seen[key]}; "
                    "expected each utterance once per file"
                )
            seen[key] = where
        yield record, where


def _bad_suffix(path: Path):
    raise DatasetError(f"{path}: MELD annotations are .csv files; got {path.suffix!r}")


def read_goemotions(paths: str | Path | Sequence[str | Path], *, min_agreement: float = 0.5) -> EmotionCorpus:
    """GoEmotions' raw files (``goemotions_1.csv``…: one row per rater, a 0/1 column per emotion) in the 7 classes.

    Each rater's marks are mapped to Ekman classes (`GOEMOTIONS_TO_EKMAN`); an item gets the class most of its raters
    chose, if more than ``min_agreement`` of them chose it and no other class ties. Raters who flagged the example as
    very unclear do not vote. Items without such a class are dropped and counted (``dropped_no_majority``).
    (`load_text_splits(source="goemotions")` reads the same files with their 28 classes, multi-label if asked.)
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    to_ekman = {fine: ekman for ekman, fines in GOEMOTIONS_TO_EKMAN.items() for fine in fines}
    report: Counter = Counter()
    items = read_rater_votes(paths, report)

    def rows():
        for item in items.values():
            votes = Counter(ekman for rating in item.ratings for ekman in {to_ekman[fine] for fine in rating})
            ranked = votes.most_common(2)
            if not ranked or ranked[0][1] <= min_agreement * len(item.ratings) or (
                len(ranked) == 2 and ranked[1][1] == ranked[0][1]
            ):
                report["dropped_no_majority"] += 1
                continue
            yield item.text, ranked[0][0], "raw", item.where

    name = "+".join(Path(p).stem for p in paths)
    return build_corpus(rows(), name, report=report)


def require_all_classes(corpus: EmotionCorpus, minimum: int = 1) -> None:
    """A `DatasetError` naming every class with fewer than ``minimum`` examples."""
    short = {name: n for name, n in corpus.class_counts().items() if n < minimum}
    if short:
        raise DatasetError(
            f"{corpus.name}: emotion(s) {short} have fewer than {minimum} example(s); every one of "
            f"{list(corpus.classes)} needs at least {minimum}"
        )


def _single_label(corpus: EmotionCorpus, what: str) -> None:
    if corpus.multi_label:
        raise DatasetError(f"{corpus.name}: {what} needs one label per text; this corpus is multi-label "
                           "(load it with multi_label=False)")


def paper_split(
    corpus: EmotionCorpus, *, test_fraction: float = 0.1, seed: int = 0
) -> tuple[EmotionCorpus, EmotionCorpus]:
    """The paper's train and test parts: a stratified ``1 - test_fraction`` / ``test_fraction`` split, then

    - train: balanced as `balance_classes` does (every class oversampled to the largest non-neutral one, neutral cut
      to that size);
    - test: every class cut to the size of the smallest one, so that chance is 1/C.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: expected a fraction strictly between 0 and 1")
    _single_label(corpus, "the paper's split")
    require_all_classes(corpus, minimum=2)  # one for each part
    rng = random.Random(seed)
    by_class = _indices_by_label(corpus)
    train_parts, test_parts = {}, {}
    for label in range(len(corpus.classes)):
        indices = by_class[label][:]
        rng.shuffle(indices)
        n_test = min(max(1, round(test_fraction * len(indices))), len(indices) - 1)
        test_parts[label], train_parts[label] = indices[:n_test], indices[n_test:]
    train, target = _oversampled(train_parts, corpus.classes, rng)
    smallest = min(len(part) for part in test_parts.values())
    test = [index for part in test_parts.values() for index in rng.sample(part, smallest)]
    rng.shuffle(train)
    rng.shuffle(test)
    train_corpus = corpus.subset(train, name=f"{corpus.name}/train")
    test_corpus = corpus.subset(test, name=f"{corpus.name}/test")
    train_corpus.report["train_per_class"] = target
    test_corpus.report["test_per_class"] = smallest
    return train_corpus, test_corpus


def balance_classes(corpus: EmotionCorpus, *, seed: int = 0) -> EmotionCorpus:
    """The paper's balanced training set made of ``corpus``: every class oversampled (with replacement, originals
    kept) up to the largest non-neutral class, neutral cut down (or oversampled) to that size. Counted in the report
    as ``balanced_per_class``."""
    _single_label(corpus, "balancing by oversampling")
    require_all_classes(corpus, minimum=1)
    rng = random.Random(seed)
    chosen, target = _oversampled(_indices_by_label(corpus), corpus.classes, rng)
    rng.shuffle(chosen)
    balanced = corpus.subset(chosen, name=f"{corpus.name}[balanced]")
    balanced.report["balanced_per_class"] = target
    return balanced


def _indices_by_label(corpus: EmotionCorpus) -> dict:
    by_label: dict = defaultdict(list)
    for index, label in enumerate(corpus.labels):
        by_label[label].append(index)
    return by_label


def _oversampled(parts: dict[int, list[int]], classes: Sequence[str], rng: random.Random) -> tuple[list[int], int]:
    """Indices of every class's part brought to one size: that of the largest class other than neutral (the one
    class the paper's corpora have far more of)."""
    neutral = classes.index("neutral") if "neutral" in classes else None
    target = max(len(part) for label, part in parts.items() if label != neutral or len(parts) == 1)
    chosen: list[int] = []
    for label in range(len(classes)):
        part = parts[label]
        if len(part) >= target:
            chosen.extend(rng.sample(part, target))
        else:
            chosen.extend(part + rng.choices(part, k=target - len(part)))
    return chosen, target


def stratified_sample(corpus: EmotionCorpus, per_class: int, *, seed: int = 0) -> EmotionCorpus:
    """At most ``per_class`` examples of every class (multi-label: of every label combination), drawn without
    replacement (a smaller corpus for quick runs)."""
    rng = random.Random(seed)
    by_class = _indices_by_label(corpus)
    chosen = sorted(i for part in by_class.values() for i in rng.sample(part, min(per_class, len(part))))
    sample = corpus.subset(chosen, name=f"{corpus.name}[≤{per_class}/class]")
    sample.report["sampled_per_class_max"] = per_class
    return sample
