"""Text emotion corpora in the format of "Decoding Emotion in the Deep": text, emotion (7 classes), source.

Readers: the paper's own files (JSONL, CSV, Parquet) or a Hugging Face dataset id (`read_corpus`); GoEmotions' raw
rater files mapped to the 7 classes (`read_goemotions`); MELD's text annotation CSVs (`read_meld`). Then the paper's
split (`paper_split`): 90/10 stratified, the training part balanced by oversampling, the test part cut to the smallest
class. Every reader drops empty texts and exact duplicates and says how many in the corpus' `report`; every fix or drop
is counted there and announced with a `CorpusWarning`, never made silently.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.labelsets import load_label_set
from affectlab.datasets.textfile import read_text

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
    """Parallel lists: ``texts[i]`` has emotion ``EMOTIONS[labels[i]]`` and came from ``sources[i]``."""

    texts: list[str]
    labels: list[int]
    sources: list[str]
    name: str = "corpus"
    report: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def emotions(self) -> list[str]:
        return [EMOTIONS[label] for label in self.labels]

    def class_counts(self) -> dict[str, int]:
        counts = Counter(self.labels)
        return {name: counts.get(index, 0) for index, name in enumerate(EMOTIONS)}

    def subset(self, indices: Sequence[int], name: str | None = None) -> "EmotionCorpus":
        return EmotionCorpus(
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.sources[i] for i in indices],
            name=name or self.name,
            report=Counter(self.report),
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
    texts, labels, sources = [], [], []
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
        original = "" if text is None else str(text)
        repaired = fix_encoding(original)
        if repaired != original.replace("\xa0", " "):
            report["fixed_encoding"] += 1
        repaired = " ".join(repaired.split())
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
    if not texts:
        raise DatasetError(f"{name}: no usable example in {rows_seen} rows (report: {dict(report)})")
    corpus = EmotionCorpus(texts, labels, sources, name=name, report=report)
    corpus.report["rows"] = rows_seen
    corpus.report["kept"] = len(texts)
    changed = {k: v for k, v in report.items() if k not in ("rows", "kept")}
    if changed:
        warnings.warn(f"{name}: {len(texts)} of {rows_seen} rows kept; {changed}", CorpusWarning, stacklevel=3)
    return corpus


def _records(path: Path) -> Iterable[tuple[dict, str]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_records(path)
        return
    if suffix not in (".jsonl", ".json", ".csv", ".tsv"):
        raise DatasetError(f"{path}: unknown corpus format {suffix!r}; expected .jsonl, .json, .csv, .tsv or .parquet")
    text = read_text(path, "corpus file", "a .jsonl, .json, .csv or .tsv corpus")
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            raise DatasetError(f"{path}: not a JSON list of objects ({error})") from error
        if not isinstance(records, list):
            raise DatasetError(f"{path}: a JSON {type(records).__name__}; expected a list of objects")
        for number, record in enumerate(records, start=1):
            if not isinstance(record, dict):
                raise DatasetError(f"{path} item {number}: a {type(record).__name__}; expected a JSON object")
            yield record, f"{path} item {number}"
    elif suffix in (".jsonl", ".json"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as error:
                raise DatasetError(f"{path}:{number}: not a JSON object ({error})") from error
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{number}: a {type(record).__name__}; expected a JSON object")
            yield record, f"{path}:{number}"
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
        try:
            for record in reader:
                if None in record or None in record.values():  # more cells than the header, or fewer
                    cells = len(record) - 1 + len(record[None]) if None in record else sum(
                        v is not None for v in record.values())
                    raise DatasetError(f"{path}:{reader.line_num}: {cells} cells; expected {len(reader.fieldnames)} "
                                       f"({','.join(reader.fieldnames)})")
                yield record, f"{path}:{reader.line_num}"
        except csv.Error as error:  # e.g. a field longer than the csv module's limit
            raise DatasetError(f"{path}:{reader.line_num}: not readable as CSV ({error})") from error


def _parquet_records(path: Path) -> Iterable[tuple[dict, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as error:  # not Parquet, truncated, unreadable
        raise DatasetError(f"{path}: cannot read as Parquet ({error}); expected a Parquet corpus table") from None
    for number, row in enumerate(rows, start=1):
        yield row, f"{path} row {number}"


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
        return build_corpus(_columns_rows(_records(path), columns, str(path)), path.name, unknown=unknown)
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
            records = _unique_utterances(_records(path)) if path.suffix.lower() == ".csv" else _bad_suffix(path)
            yield from _columns_rows(records, {"text": "Utterance", "emotion": "Emotion", "source": None}, str(path))

    name = "+".join(Path(p).stem for p in paths)
    return build_corpus(rows(), name, unknown=unknown)


def _unique_utterances(records: Iterable[tuple[dict, str]]) -> Iterable[tuple[dict, str]]:
    """MELD's records; a (Dialogue_ID, Utterance_ID) pair seen before in the same file (a file pasted twice) is an
    error."""
    seen: dict[tuple[str, str], str] = {}
    for record, where in records:
        if "Dialogue_ID" in record and "Utterance_ID" in record:
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
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    to_ekman = {fine: ekman for ekman, fines in GOEMOTIONS_TO_EKMAN.items() for fine in fines}
    votes: dict[str, Counter] = defaultdict(Counter)
    raters: Counter = Counter()
    texts: dict[str, tuple[str, str]] = {}
    report: Counter = Counter()
    for path in map(Path, paths):
        if not path.is_file():
            raise DatasetError(f"{path}: no such file; expected GoEmotions' raw goemotions_N.csv")
        for record, where in _records(path):
            missing = [c for c in ("id", "text", *to_ekman) if c not in record]
            if missing:
                raise DatasetError(f"{where}: GoEmotions column(s) {missing} missing; has {sorted(map(str, record))}")
            item = str(record["id"]).strip() if record["id"] is not None else ""
            if not item:
                raise DatasetError(f"{where}: empty id; expected the id of the rated example")
            text, first = texts.setdefault(item, (record["text"], where))
            if text != record["text"]:
                raise DatasetError(
                    f"{where}: id {item!r} has text {record['text']!r} but {first} gave it {text!r}; "
                    "expected one text per id"
                )
            marks = {fine: str(record[fine]).strip() for fine in to_ekman}
            bad = {fine: mark for fine, mark in marks.items() if mark not in ("0", "1")}
            if bad:
                raise DatasetError(f"{where}: emotion mark(s) {bad}; expected 0 or 1 in every emotion column")
            if str(record.get("example_very_unclear", "")).strip().lower() in ("true", "1"):
                report["unclear_ratings"] += 1
                continue
            chosen = {to_ekman[fine] for fine, mark in marks.items() if mark == "1"}
            raters[item] += 1
            votes[item].update(chosen)

    def rows():
        for item, (text, where) in texts.items():
            ranked = votes[item].most_common(2)
            if not ranked or ranked[0][1] <= min_agreement * raters[item] or (
                len(ranked) == 2 and ranked[1][1] == ranked[0][1]
            ):
                report["dropped_no_majority"] += 1
                continue
            yield text, ranked[0][0], "raw", where

    name = "+".join(Path(p).stem for p in paths)
    return build_corpus(rows(), name, report=report)


def require_all_classes(corpus: EmotionCorpus, minimum: int = 1) -> None:
    """A `DatasetError` naming every emotion with fewer than ``minimum`` examples."""
    short = {name: n for name, n in corpus.class_counts().items() if n < minimum}
    if short:
        raise DatasetError(
            f"{corpus.name}: emotion(s) {short} have fewer than {minimum} example(s); every one of {list(EMOTIONS)} "
            f"needs at least {minimum}"
        )


def paper_split(
    corpus: EmotionCorpus, *, test_fraction: float = 0.1, seed: int = 0
) -> tuple[EmotionCorpus, EmotionCorpus]:
    """The paper's train and test parts: a stratified ``1 - test_fraction`` / ``test_fraction`` split, then

    - train: every emotion oversampled (with replacement, originals kept) up to the largest non-neutral class, and
      neutral cut down (or oversampled) to that same size;
    - test: every class cut to the size of the smallest one, so that chance is 1/7.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: expected a fraction strictly between 0 and 1")
    require_all_classes(corpus, minimum=2)  # one for each part
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(corpus.labels):
        by_class[label].append(index)
    train_parts, test_parts = {}, {}
    for label in range(len(EMOTIONS)):
        indices = by_class[label][:]
        rng.shuffle(indices)
        n_test = min(max(1, round(test_fraction * len(indices))), len(indices) - 1)
        test_parts[label], train_parts[label] = indices[:n_test], indices[n_test:]

    neutral = EMOTIONS.index("neutral")
    target = max(len(part) for label, part in train_parts.items() if label != neutral)
    train: list[int] = []
    for label, part in train_parts.items():
        if len(part) >= target:
            train.extend(rng.sample(part, target))
        else:
            train.extend(part + rng.choices(part, k=target - len(part)))
    smallest = min(len(part) for part in test_parts.values())
    test = [index for part in test_parts.values() for index in rng.sample(part, smallest)]
    rng.shuffle(train)
    rng.shuffle(test)
    train_corpus = corpus.subset(train, name=f"{corpus.name}/train")
    test_corpus = corpus.subset(test, name=f"{corpus.name}/test")
    train_corpus.report["train_per_class"] = target
    test_corpus.report["test_per_class"] = smallest
    return train_corpus, test_corpus


def stratified_sample(corpus: EmotionCorpus, per_class: int, *, seed: int = 0) -> EmotionCorpus:
    """At most ``per_class`` examples of every emotion, drawn without replacement (a smaller corpus for quick runs)."""
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(corpus.labels):
        by_class[label].append(index)
    chosen = sorted(i for part in by_class.values() for i in rng.sample(part, min(per_class, len(part))))
    sample = corpus.subset(chosen, name=f"{corpus.name}[≤{per_class}/class]")
    sample.report["sampled_per_class_max"] = per_class
    return sample
