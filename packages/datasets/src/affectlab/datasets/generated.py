"""Data generated once and kept in affectlab's cache folder, under a name that hashes what made it."""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from affectlab.datasets.errors import DatasetError
from affectlab.datasets.integrity import cache_key


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$AFFECTLAB_CACHE``, else ``~/.cache/affectlab``."""
    return Path(cache_dir if cache_dir is not None else os.environ.get("AFFECTLAB_CACHE", "~/.cache/affectlab")).expanduser()


def generate_once(make: Callable[..., object], name: str, version: int, params: dict,
                  cache_dir: str | Path | None = None) -> Path:
    """The folder ``make(root, **params)`` fills, made once: ``<cache>/<name>-<hash of version and all params>``.

    ``params`` are keywords of ``make`` (the rest take its defaults). The folder appears only complete: it is built in
    a scratch folder and renamed into place, so an interrupted run leaves nothing a later call would use, and of two
    processes building it at once the first to finish wins.
    """
    defaults = {key: p.default for key, p in inspect.signature(make).parameters.items() if key != "root"}
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise DatasetError(f"{name}: unknown parameter(s) {unknown}; expected some of {sorted(defaults)}")
    full = defaults | params
    # tuples and lists (a YAML list) must name the same folder: both are JSON lists
    target = cache_root(cache_dir) / f"{name}-{cache_key({'version': version, **full})}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        make(scratch, **full)
        os.replace(scratch, target)
    except OSError:
        if not target.is_dir():  # another process finished the same data first: theirs is complete, keep it
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
