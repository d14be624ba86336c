"""GoEmotions (Demszky et al., ACL 2020) as released, in the classes of the `goemotions` label set (27 emotions and
neutral, in the order of its emotions.txt).

Two forms of the release:

- the official splits, ``data/{train,dev,test}.tsv``: no header, one item per line: text, its label ids
  (comma-separated, ids into ``emotions.txt``, one emotion name per line), the comment id. `read_split_tsv` reads one;
- the raw ratings, ``goemotions_1.csv`` ... (one row per rater: text, id, ..., rater_id, example_very_unclear, then a
  0/1 column per emotion) with no split. `read_rater_votes` gathers each item's ratings and `agreed_labels` keeps the
  fine emotions that enough of its raters marked (before any mapping to Ekman's classes; see its docstring for how
  this differs from `emotion_corpus.read_goemotions`).

Each reader yields ``(text, labels, where)``: labels are indices into the `goemotions` label set (several per item),
``where`` is ``file:line``. Mapping to Ekman's classes, filtering and deduplication are the split loader's work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.labelsets import load_label_set
from affectlab.datasets.text_tables import read_columns, read_records
from affectlab.datasets.textfile import read_text

GOEMOTIONS = load_label_set("goemotions")
# the official files of each split, in data/ or at the top of the folder
SPLIT_FILES = {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}
RATER_GLOB = "goemotions_*.csv"
# the rater files' emotion columns, checked in the order of the Ekman grouping (which holds every class)
RATER_COLUMNS = tuple(fine for fines in GOEMOTIONS.groups.values() for fine in fines)


def find_release(folder: Path) -> tuple[dict[str, Path] | None, Path | None, list[Path]]:
    """Where the release's files are under ``folder``: the split TSVs (None when there are none), emotions.txt (None
    when absent) and the raw rater CSVs (``folder``, ``data/`` or ``data/full_dataset/``, sorted)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder; expected GoEmotions' folder (data/train.tsv, dev.tsv, test.tsv "
                           "and emotions.txt, or the raw goemotions_N.csv files)")
    places = [folder / "data", folder]
    splits = None
    for place in places:
        found = {split: place / name for split, name in SPLIT_FILES.items() if (place / name).is_file()}
        if found:
            missing = [str(place / name) for split, name in SPLIT_FILES.items() if split not in found]
            if missing:
                raise DatasetError(f"{place}: GoEmotions split file(s) {missing} missing; expected train.tsv, dev.tsv "
                                   "and test.tsv together")
            splits = found
            break
    emotions = next((place / "emotions.txt" for place in places if (place / "emotions.txt").is_file()), None)
    raters = sorted(path for place in (folder, folder / "data", folder / "data" / "full_dataset") if place.is_dir()
                    for path in place.glob(RATER_GLOB))
    return splits, emotions, raters


def read_emotion_names(path: Path) -> list[int]:
    """emotions.txt: label id k (the k-th line) -> the index of that emotion in the `goemotions` label set."""
    names = [line.strip() for line in read_text(path, "GoEmotions emotions.txt", "one emotion name per line")
             .splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DatasetError(f"{path}: empty; expected GoEmotions' emotion names, one per line ({GOEMOTIONS.classes[0]}, "
                           f"{GOEMOTIONS.classes[1]}, ...)")
    seen: dict[str, int] = {}
    ids = []
    for number, name in enumerate(names, start=1):
        if name.lower() not in GOEMOTIONS.classes:
            raise DatasetError(f"{path}:{number}: emotion {name!r} is not a GoEmotions class; expected one of "
                               f"{list(GOEMOTIONS.classes)}")
        if name.lower() in seen:
            raise DatasetError(f"{path}:{number}: emotion {name!r} repeats line {seen[name.lower()]}; expected each "
                               "emotion once")
        seen[name.lower()] = number
        ids.append(GOEMOTIONS.classes.index(name.lower()))
    return ids


def read_split_tsv(path: Path, id_to_class: Sequence[int]) -> Iterable[tuple[str, tuple[int, ...], str]]:
    """One official split file: ``(text, labels, where)`` per line, label ids mapped through emotions.txt."""
    for cells, where in read_columns(path, {"text": 0, "labels": 1}, optional={"id": 2}, header=False,
                                     what="GoEmotions split file"):
        cell = str(cells["labels"]).strip()
        labels = []
        for token in cell.split(","):
            token = token.strip()
            if not token.isdigit() or int(token) >= len(id_to_class):
                raise DatasetError(f"{where}: label id {token!r} (in {cell!r}) is not an id of emotions.txt; expected "
                                   f"comma-separated ids 0 to {len(id_to_class) - 1}")
            labels.append(id_to_class[int(token)])
        yield str(cells["text"]), tuple(sorted(set(labels))), where


@dataclass
class RatedItem:
    """One rated example of the raw files: its text, where it was first seen, and the emotions each rater marked
    (raters who flagged it very unclear do not rate; `read_rater_votes` counts them in its report)."""

    text: str
    where: str
    ratings: list[frozenset[str]] = field(default_factory=list)


def read_rater_votes(paths: Sequence[str | Path], report: Counter) -> dict[str, RatedItem]:
    """The raw rater CSVs, gathered by example id (in the order first seen). Counts ``unclear_ratings`` in
    ``report``."""
    items: dict[str, RatedItem] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise DatasetError(f"{path}: no such file; expected GoEmotions' raw goemotions_N.csv")
        for record, where in read_records(path):
            missing = [c for c in ("id", "text", *RATER_COLUMNS) if c not in record]
            if missing:
                raise DatasetError(f"{where}: GoEmotions column(s) {missing} missing; has {sorted(map(str, record))}")
            item = str(record["id"]).strip() if record["id"] is not None else ""
            if not item:
                raise DatasetError(f"{where}: empty id; expected the id of the rated example")
            rated = items.setdefault(item, RatedItem(record["text"], where))
            if rated.text != record["text"]:
                raise DatasetError(
                    f"{where}: id {item!r} has text {record['text']!r} but {rated.where} gave it {rated.text!r}; "
                    "expected one text per id"
                )
            marks = {name: str(record[name]).strip() for name in RATER_COLUMNS}
            bad = {name: mark for name, mark in marks.items() if mark not in ("0", "1")}
            if bad:
                raise DatasetError(f"{where}: emotion mark(s) {bad}; expected 0 or 1 in every emotion column")
            if str(record.get("example_very_unclear", "")).strip().lower() in ("true", "1"):
                report["unclear_ratings"] += 1
                continue
            rated.ratings.append(frozenset(name for name, mark in marks.items() if mark == "1"))
    return items


def agreed_labels(items: dict[str, RatedItem], min_agreement: float, report: Counter
                  ) -> Iterable[tuple[str, tuple[int, ...], str]]:
    """``(text, labels, where)`` per rated example, labels in the 28 fine classes: a fine emotion is kept when at
    least (>=) ``min_agreement`` of the raters who rated it (very unclear flags excluded) marked it, each fine emotion
    on its own, every one that agrees kept (multi-label, no tie-break). Mapping to Ekman's classes comes after, on the
    kept fine labels (the split loader's grouping). Examples no rater could rate are counted as
    ``dropped_all_raters_unclear``; those with no emotion that agreed, as ``dropped_no_agreed_label``.

    This is not the rule of `emotion_corpus.read_goemotions`, which maps each rater's marks to Ekman's classes
    first and keeps the one class strictly more than ``min_agreement`` of the raters chose, dropping ties. At 0.5,
    of three raters marking joy, amusement and neutral, this keeps nothing (1/3 each) and that keeps joy (2/3); of
    two raters marking anger and joy, this keeps both and that drops the tie; of four raters two of whom mark joy,
    this keeps joy and that does not (2 is not more than half of 4)."""
    if not 0.0 < min_agreement <= 1.0:
        raise DatasetError(f"min_agreement={min_agreement}: expected a share of raters in (0, 1]")
    for item in items.values():
        if not item.ratings:
            report["dropped_all_raters_unclear"] += 1
            continue
        marked = Counter(name for rating in item.ratings for name in rating)
        kept = [name for name, count in marked.items() if count >= min_agreement * len(item.ratings)]
        if not kept:
            report["dropped_no_agreed_label"] += 1
            continue
        yield item.text, tuple(sorted(GOEMOTIONS.classes.index(name) for name in kept)), item.where
