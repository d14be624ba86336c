"""The modality table: what every modality predictor writes and the fusion reads.

A CSV file, one row per segment:

    segment_id,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other
    01/0000,0.100000,0.050000,...
    01/0001,,,,,,,,                      <- the modality has nothing for this segment (missing)

The eight probabilities are in AffWild2's order and sum to 1 (within a tolerance); a missing segment has all eight
cells empty. Any tool can write one. The tables fused together must list the same segment ids (in any order). A
modality that also predicts the compound expressions directly (zero-shot CLIP) writes a second table of the same
form with `classes=CEXPR_COMPOUNDS`.

Tables a run computes itself are a cache: `write_cached_table` writes one atomically and records its size and
SHA-256 in the folder's manifest.json (`affectlab.datasets.integrity`); `cached_table_ok` is true only for a file
that still matches its record, so a truncated or otherwise damaged table is rebuilt, never read.
`ensure_modality_table` is the two together.

Text modalities (scene descriptions, transcripts) come as a text table, `segment_id,text` (an empty text: nothing
for that segment), that a text classifier turns into a modality table (`read_text_table`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from affectlab.datasets.affwild2 import AFFWILD2_EXPRESSIONS
from affectlab.datasets.cexpr import CEXPR_CLASSES, OTHER
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.integrity import file_record, matches, write_atomic
from affectlab.datasets.textfile import read_text

CEXPR_COMPOUNDS = CEXPR_CLASSES[:OTHER]  # the seven compound expressions, without Other
SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ModalityTable:
    name: str  # the modality, the file's stem
    segment_ids: tuple[str, ...]
    probs: np.ndarray  # [N, classes], a NaN row where the modality is missing
    source: str  # the file
    classes: tuple[str, ...] = AFFWILD2_EXPRESSIONS

    @property
    def present(self) -> np.ndarray:
        return ~np.isnan(self.probs).any(axis=1)


def validate_probabilities(
    probs: np.ndarray,
    segment_ids: Sequence[str],
    where: str,
    first_line: int = 2,
    tolerance: float = SUM_TOLERANCE,
    classes: Sequence[str] = AFFWILD2_EXPRESSIONS,
) -> None:
    """Every row all-NaN (missing) or finite, non-negative values summing to 1; ids unique and non-empty."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes) or len(segment_ids) != len(probs):
        raise DatasetError(
            f"{where}: {len(segment_ids)} ids and probabilities of shape {probs.shape}; "
            f"expected one row of {len(classes)} per id"
        )
    seen: dict[str, int] = {}
    for row, segment in enumerate(segment_ids):
        if not segment or segment in seen:
            raise DatasetError(
                f"{where}:{first_line + row}: segment id {segment!r} "
                + (f"repeats row {first_line + seen[segment]}" if segment in seen else "is empty")
                + "; expected each segment once"
            )
        seen[segment] = row
    nan = np.isnan(probs)
    missing = nan.all(axis=1)

    def fail(row: int, problem: str) -> None:
        values = ", ".join(f"{name}={value:g}" for name, value in zip(classes, probs[row]))
        raise DatasetError(f"{where}:{first_line + row}: segment {segment_ids[row]!r} {problem} ({values})")

    partial = np.nonzero(nan.any(axis=1) & ~missing)[0]
    if partial.size:
        fail(int(partial[0]), f"has some probabilities missing; expected all {len(classes)} or none")
    known = np.where(missing[:, None], 0.0, probs)
    negative = np.nonzero((known < 0).any(axis=1) | np.isinf(known).any(axis=1))[0]
    if negative.size:
        fail(int(negative[0]), "has a negative or infinite probability; expected values in [0, 1]")
    sums = known.sum(axis=1)
    off = np.nonzero(~missing & (np.abs(sums - 1.0) > tolerance))[0]
    if off.size:
        fail(int(off[0]), f"sums to {sums[off[0]]:.6f}; expected 1 within {tolerance:g}")


def write_modality_table(
    path: str | Path, segment_ids: Sequence[str], probs: np.ndarray, classes: Sequence[str] = AFFWILD2_EXPRESSIONS
) -> Path:
    """Validate and write a table (atomically: a reader never sees half a file)."""
    path = Path(path)
    probs = np.asarray(probs, dtype=np.float64)
    validate_probabilities(probs, segment_ids, str(path), classes=classes)

    def write(scratch: Path) -> None:
        with scratch.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["segment_id", *classes])
            for segment, row in zip(segment_ids, probs):
                writer.writerow([segment, *("" if math.isnan(v) else f"{v:.6f}" for v in row)])

    return write_atomic(path, write)


def read_modality_table(
    path: str | Path, tolerance: float = SUM_TOLERANCE, classes: Sequence[str] = AFFWILD2_EXPRESSIONS
) -> ModalityTable:
    path = Path(path)
    header = ("segment_id", *classes)
    rows = list(csv.reader(read_text(path, "modality table", f"a CSV {','.join(header)}").splitlines()))
    if not rows or tuple(cell.strip() for cell in rows[0]) != header:
        raise DatasetError(f"{path}:1: header {rows[0] if rows else ''!r}; expected {','.join(header)}")
    ids, values = [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DatasetError(f"{path}:{lineno}: {len(row)} cells; expected {len(header)} ({','.join(header)})")
        try:
            values.append([float(cell) if cell.strip() else math.nan for cell in row[1:]])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: {row[1:]!r}; expected numbers or empty cells") from None
        ids.append(row[0].strip())
    probs = np.asarray(values, dtype=np.float64).reshape(len(ids), len(classes))
    validate_probabilities(probs, ids, str(path), tolerance=tolerance, classes=classes)
    return ModalityTable(path.stem, tuple(ids), probs, str(path), tuple(classes))


def align_modality_tables(
    tables: Sequence[ModalityTable], segment_ids: Sequence[str] | None = None
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(segment ids, probs [N, M, 8] with NaN where missing, present [N, M]); every table must list the same ids."""
    if not tables:
        raise DatasetError("no modality tables to align; expected at least one")
    order = tuple(segment_ids) if segment_ids is not None else tables[0].segment_ids
    wanted = set(order)
    columns = []
    for table in tables:
        index = {segment: row for row, segment in enumerate(table.segment_ids)}
        extra = [s for s in table.segment_ids if s not in wanted]
        lacking = [s for s in order if s not in index]
        if extra or lacking:
            reference = "the given segment ids" if segment_ids is not None else tables[0].source
            raise DatasetError(
                f"{table.source}: segment ids disagree with {reference}: "
                + (f"extra {extra[:3]} " if extra else "")
                + (f"lacks {lacking[:3]} " if lacking else "")
                + "; expected the same segments in every table (an empty row marks a missing one)"
            )
        columns.append(table.probs[[index[s] for s in order]])
    probs = np.stack(columns, axis=1)
    return order, probs, ~np.isnan(probs).any(axis=2)


MANIFEST = "manifest.json"


def _manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent or itself damaged: every table in the folder is rebuilt
        return {}


def cached_table_ok(path: str | Path) -> bool:
    """True when `path` is a table `write_cached_table` wrote and its bytes are unchanged since (size and SHA-256)."""
    path = Path(path)
    return matches(path, _manifest(path.parent).get(path.name))


def write_cached_table(
    path: str | Path, segment_ids: Sequence[str], probs: np.ndarray, classes: Sequence[str] = AFFWILD2_EXPRESSIONS
) -> Path:
    """`write_modality_table`, then the file's size and SHA-256 recorded in its folder's manifest.json."""
    path = write_modality_table(path, segment_ids, probs, classes)
    text = json.dumps(_manifest(path.parent) | {path.name: file_record(path)}, indent=1, sort_keys=True)
    write_atomic(path.parent / MANIFEST, lambda scratch: scratch.write_text(text, encoding="utf-8"))
    return path


def ensure_modality_table(
    path: str | Path,
    segment_ids: Sequence[str],
    predict: Callable[[], np.ndarray],
    classes: Sequence[str] = AFFWILD2_EXPRESSIONS,
) -> ModalityTable:
    """The table at `path` if the manifest vouches for it and it lists exactly `segment_ids`; otherwise `predict()`
    ([N, classes]) written there (a damaged or stale table is rebuilt, never read)."""
    path = Path(path)
    if cached_table_ok(path):
        table = read_modality_table(path, classes=classes)
        if set(table.segment_ids) == set(segment_ids):
            return table
    write_cached_table(path, segment_ids, predict(), classes)
    return read_modality_table(path, classes=classes)


def read_text_table(path: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(segment ids, texts) of a CSV `segment_id,text`; an empty text means the modality has nothing there."""
    path = Path(path)
    rows = list(csv.reader(read_text(path, "text table", "a CSV segment_id,text").splitlines()))
    if not rows or tuple(cell.strip() for cell in rows[0]) != ("segment_id", "text"):
        raise DatasetError(f"{path}:1: header {rows[0] if rows else ''!r}; expected segment_id,text")
    ids, texts, seen = [], [], {}
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise DatasetError(f"{path}:{lineno}: {len(row)} cells {row!r}; expected 2 (segment_id,text; quote a "
                               "text that holds a comma)")
        segment = row[0].strip()
        if not segment or segment in seen:
            problem = f"repeats line {seen[segment]}" if segment in seen else "is empty"
            raise DatasetError(f"{path}:{lineno}: segment id {segment!r} {problem}; expected each segment once")
        seen[segment] = lineno
        ids.append(segment)
        texts.append(row[1].strip())
    return tuple(ids), tuple(texts)


def write_text_table(path: str | Path, segment_ids: Sequence[str], texts: Sequence[str]) -> Path:
    """Write a text table (atomically); "" marks a segment without text."""

    def write(scratch: Path) -> None:
        with scratch.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["segment_id", "text"])
            writer.writerows(zip(segment_ids, texts))

    return write_atomic(path, write)
