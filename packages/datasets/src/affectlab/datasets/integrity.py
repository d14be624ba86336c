"""Files that an interrupted run can never leave half-written, and a record that tells a damaged one from a good one.

Every on-disk cache in the project (crop caches, feature caches, activation shards, modality tables, clip vectors,
generated data sets, checkpoints) lives in a folder named by `cache_key` of what it depends on (`keyed_folder`),
writes through `write_atomic` and describes each file by `file_record`; a reader calls `matches` and rebuilds a file
whose size or SHA-256 differs instead of reading it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

KEY_FILE = "key.json"  # in a keyed cache folder: what its files depend on


def sha256_of(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DiskFullError(OSError):
    """A file could not be written for want of space; the message says which, where, and how much was needed."""

    def __str__(self) -> str:
        return str(self.strerror)


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(scratch)`` on a scratch file beside `path`, flush it to disk, then rename it over `path`.

    A crash at any moment leaves either the old file or the new one, never a part of either (rename is atomic on
    POSIX within one file system, which is why the scratch file lives in the same folder). A full disk is a
    DiskFullError naming the file, the space free there and at least what the file needed; the old file stays.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    scratch = Path(name)
    try:
        write(scratch)
        with scratch.open("rb+") as flushed:
            os.fsync(flushed.fileno())
        os.replace(scratch, path)
    except Exception as error:
        if not _disk_full(error, path.parent):
            raise
        written = scratch.stat().st_size if scratch.exists() else 0
        free = shutil.disk_usage(path.parent).free
        raise DiskFullError(errno.ENOSPC, f"disk full: writing {path} stopped after {written / 1e6:.1f} MB with "
                                          f"{free / 1e6:.1f} MB free on its file system (it needs more than that); "
                                          "nothing was left half-written: free some space and run again (resume=auto "
                                          "continues a training)") from None
    finally:
        scratch.unlink(missing_ok=True)
    return path


def _disk_full(error: BaseException, folder: Path) -> bool:
    """True when a write failed for want of space: ENOSPC or a quota, or a writer's own failure (torch.save's zip
    writer raises a RuntimeError, "file write failed") while less than 64 MB are free."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left on device" in str(error):
        return True
    return "write failed" in str(error) and shutil.disk_usage(folder).free < 64e6


def file_record(path: str | Path) -> dict:
    """What a manifest keeps of a file to recognise it later: its size in bytes and its SHA-256."""
    path = Path(path)
    return {"bytes": path.stat().st_size, "sha256": sha256_of(path)}


def matches(path: str | Path, record: dict | None) -> bool:
    """True when `path` exists with the size and SHA-256 of `record` (size first: a truncated file costs no hashing)."""
    path = Path(path)
    if record is None or not path.is_file() or path.stat().st_size != record.get("bytes"):
        return False
    return sha256_of(path) == record.get("sha256")


def inside(root: str | Path, relative: str, where: str) -> Path:
    """``root / relative`` for a path read from a data file (a clip's folder in an annotation line): a path that would
    leave `root` (absolute, or climbing out with ``..``) is a DatasetError naming `where` (the file and line), so that
    neither a reader nor a cache writer ever touches a file outside the data set's or the cache's folder."""
    from affectlab.datasets.errors import DatasetError

    parts = Path(relative).parts
    if not relative or Path(relative).is_absolute() or ".." in parts or relative.startswith("~"):
        raise DatasetError(f"{where}: path {relative!r} would leave {root}; expected a path inside it (relative, "
                           "without '..')")
    return Path(root) / relative


def cache_key(parts: dict) -> str:
    """The digest that names a cache entry: SHA-256 (16 hex digits) of what the cached data depends on, as sorted
    JSON (tuples and lists alike; paths and other objects by their text)."""
    text = json.dumps(parts, sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: object) -> object:
    """A value JSON does not know: a sequence (an omegaconf ListConfig) as a list, anything else (a path) as text."""
    if hasattr(value, "__iter__") and not isinstance(value, (str, bytes)) and not hasattr(value, "keys"):
        return list(value)
    if hasattr(value, "keys"):
        return {str(k): value[k] for k in value.keys()}
    return str(value)


def keyed_folder(root: str | Path, parts: dict, prefix: str = "") -> Path:
    """``<root>/<prefix><cache_key(parts)>``, created with ``key.json`` spelling out `parts` (written atomically), the
    folder every on-disk cache of the project keeps its files in: another key, another folder, never a stale read."""
    folder = Path(root) / f"{prefix}{cache_key(parts)}"
    if not (folder / KEY_FILE).is_file():
        text = json.dumps(parts, sort_keys=True, indent=1, default=_plain)
        write_atomic(folder / KEY_FILE, lambda scratch: scratch.write_text(text, encoding="utf-8"))
    return folder
