"""Tables of texts as corpus files hold them: CSV, TSV (or a ``.txt`` with tabs), JSONL, a JSON list and Parquet, read
row by row with where each row came from (``file:line``).

`read_records` gives each row as a dict keyed by the file's own column names (a header is required).
`read_columns` picks the columns a reader needs, by name or by 0-based number, from a file with or without a header.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.textfile import read_text

# what each suffix is read as; ``.txt`` is a TSV when its first line has a tab
FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
Column = str | int


def read_records(path: Path) -> Iterator[tuple[dict, str]]:
    """The rows of a ``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet`` file with named columns, as ``(record,
    where)``; a CSV row with more or fewer cells than its header is an error naming the line."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_records(path)
        return
    if suffix not in (".jsonl", ".json", ".csv", ".tsv"):
        raise DatasetError(f"{path}: unknown corpus format {suffix!r}; expected .jsonl, .json, .csv, .tsv or .parquet")
    text = read_text(path, "corpus file", "a .jsonl, .json, .csv or .tsv corpus")
    if suffix in (".jsonl", ".json"):
        yield from _json_values(path, text, objects_only=True)
        return
    # not _delimited_rows: that one strips header names, skips blank-cell rows and words its errors otherwise
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


def read_columns(
    path: Path,
    columns: Mapping[str, Column],
    *,
    optional: Mapping[str, Column] | None = None,
    header: bool | None = None,
    what: str = "corpus file",
) -> Iterator[tuple[dict[str, object], str]]:
    """Each row of ``path`` as ``({role: cell}, where)`` for the roles of ``columns`` (``{"text": "Utterance"}`` or
    ``{"text": 0}``) and of ``optional`` (a cell of None when the file has no such column).

    CSV and TSV files have a header when ``header`` says so; ``None`` means a header exactly when a column is chosen
    by name. JSONL/JSON/Parquet rows are objects (columns by name) or, in JSONL and JSON, lists (columns by number).
    Every row must have as many cells as the first (or the header): a stray delimiter is an error, not a shifted row.
    An unknown column name lists the file's columns; a number out of range says how many there are. A file without
    a data row is an error.
    """
    optional = dict(optional or {})
    wanted = {**columns, **optional}
    for role, column in wanted.items():
        if isinstance(column, bool) or not isinstance(column, (str, int)) or (isinstance(column, int) and column < 0):
            raise DatasetError(f"{role} column {column!r}: expected a column name or a 0-based column number")
    suffix = path.suffix.lower()
    kind = FORMATS.get(suffix)
    if kind is None:
        raise DatasetError(f"{path}: unknown table format {suffix!r}; expected one of {', '.join(FORMATS)} "
                           "(.txt: tab-separated)")
    if kind == "parquet":
        rows = _parquet_records(path)
    else:
        text = read_text(path, what, f"a {kind.upper()} table of texts and labels")
        if kind in ("csv", "tsv"):
            if header is None:
                header = any(isinstance(column, str) for column in wanted.values())
            rows = _delimited_rows(path, text, "," if kind == "csv" else "\t", header, suffix == ".txt")
        else:
            rows = _json_values(path, text, objects_only=False)
    count = 0
    for row, where in rows:
        picked = _pick(row, columns, optional, path, where, first=count == 0)
        count += 1
        yield picked, where
    if count == 0:
        raise DatasetError(f"{path}: no data rows; expected a {what} with one text and its label per row")


def _pick(row, columns, optional, path: Path, where: str, first: bool) -> dict[str, object]:
    picked = {}
    for role, column in {**columns, **optional}.items():
        required = role in columns
        # a header does not stop a column being chosen by number
        cells = list(row.values()) if isinstance(row, _Header) and isinstance(column, int) else row
        if isinstance(cells, dict):
            if isinstance(column, int):
                raise DatasetError(f"{where}: {role} column {column} is a number, but the rows are objects with named "
                                   f"fields {sorted(map(str, cells))}; give the field name")
            if column in cells:
                picked[role] = cells[column]
            elif required:
                # the first row sets the columns; a later one without them is a broken line
                raise DatasetError(f"{path if first else where}: no column {column!r} for the {role}; has "
                                   f"{list(map(str, cells))}")
            else:
                picked[role] = None
        else:
            if isinstance(column, str):
                raise DatasetError(f"{where}: {role} column {column!r} is a name, but the rows have no header; give "
                                   "its 0-based number, or header=True if the first line names the columns")
            if column < len(cells):
                picked[role] = cells[column]
            elif required:
                raise DatasetError(f"{where}: {role} column {column} is out of range; the row has {len(cells)} "
                                   f"columns (0 to {len(cells) - 1})")
            else:
                picked[role] = None
    return picked


class _Header(dict):
    """A row of a CSV/TSV file with a header: its cells by column name (keeps the names for error messages)."""


def _delimited_rows(path: Path, text: str, delimiter: str, header: bool, is_txt: bool):
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    if is_txt and "\t" not in first_line:
        raise DatasetError(f"{path}:1: no tab in {first_line[:60]!r}; a .txt table must be tab-separated "
                           "(text<TAB>label...)")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    names: list[str] | None = None
    width = None
    line = 1
    try:
        for cells in reader:
            where = f"{path}:{line}"
            line = reader.line_num + 1  # a quoted cell may span lines: the next row starts after this one
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if header and names is None:
                names = [cell.strip() for cell in cells]
                width = len(names)
                continue
            if width is None:
                width = len(cells)
            if len(cells) != width:
                expected = f"{width} ({delimiter.join(names)})" if names else f"{width}, as the first row has"
                raise DatasetError(f"{where}: {len(cells)} cells; expected {expected}")
            yield (_Header(zip(names, cells)) if names else cells), where
    except csv.Error as error:  # a field longer than the csv module's limit, a NUL byte
        raise DatasetError(f"{path}:{line}: not readable as {'CSV' if delimiter == ',' else 'TSV'} ({error})") from None


def _json_values(path: Path, text: str, objects_only: bool):
    """JSON lines, or one JSON list (a ``.json`` file starting with ``[``), as ``(value, where)``."""
    expected = "a JSON object" if objects_only else "a JSON object or list"
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            raise DatasetError(f"{path}: not a JSON list of objects ({error})") from error
        if not isinstance(values, list):
            raise DatasetError(f"{path}: a JSON {type(values).__name__}; expected a list of objects")
        for number, value in enumerate(values, start=1):
            if not isinstance(value, dict) and (objects_only or not isinstance(value, list)):
                raise DatasetError(f"{path} item {number}: a {type(value).__name__}; expected {expected}")
            yield value, f"{path} item {number}"
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as error:
            raise DatasetError(f"{path}:{number}: not a JSON object ({error})") from error
        if not isinstance(value, dict) and (objects_only or not isinstance(value, list)):
            raise DatasetError(f"{path}:{number}: a {type(value).__name__}; expected {expected}")
        yield value, f"{path}:{number}"


def _parquet_records(path: Path) -> Iterator[tuple[dict, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as error:  # not Parquet, truncated, unreadable
        raise DatasetError(f"{path}: cannot read as Parquet ({error}); expected a Parquet corpus table") from None
    for number, row in enumerate(rows, start=1):
        yield row, f"{path} row {number}"


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """The texts a user gives to a trained model: a plain text file (``.txt`` or no suffix: one text per non-empty
    line, tabs and commas being part of the text) or a table (CSV, TSV, JSONL, JSON, Parquet) and its `column`. Empty
    texts are skipped; a file with none is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; expected a text file (one text per line) or a CSV/TSV/JSONL table")
    if path.suffix.lower() in ("", ".txt"):
        texts = [line.strip() for line in read_text(path, "text file", "texts").splitlines()]
    else:
        rows = [record for record, _ in read_records(path)]
        if rows and column not in rows[0]:
            raise DatasetError(f"{path}: no column {column!r}; its columns are {list(rows[0])} (give text_column=...)")
        texts = [str(record.get(column) or "").strip() for record in rows]
    texts = [text for text in texts if text]
    if not texts:
        raise DatasetError(f"{path}: holds no text; expected one text per line or a {column!r} column")
    return texts
