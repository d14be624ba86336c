"""Reading the text files the annotation and table parsers parse."""

from __future__ import annotations

from pathlib import Path

from affectlab.datasets.errors import DatasetError


def read_text(path: Path, what: str, expected: str) -> str:
    """The file's text (UTF-8, a byte-order mark allowed). Missing, unreadable or not UTF-8 is a DatasetError that
    names the file, ``what`` it should be and the ``expected`` content."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} not found; expected {expected}") from None
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"{path}: byte {error.start} ({error.object[error.start:error.start + 1]!r}) is not UTF-8; expected {what} "
            f"as UTF-8 text: {expected}"
        ) from None
    except OSError as error:  # a folder, no permission, ...
        raise DatasetError(f"{path}: cannot read the {what} ({error.strerror}); expected {expected}") from None
