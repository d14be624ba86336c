"""Shared fixtures: every test runs against caches and MLflow stores in temporary folders, never the user's (the
helpers tests build things with are in builders.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing is downloaded by the tests; set before huggingface_hub is first imported, which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from builders import SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic datasets go to one cache per test session (subprocesses inherit it)."""
    cache = tmp_path_factory.mktemp("affectlab-cache")
    os.environ["AFFECTLAB_CACHE"] = str(cache)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return cache


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, as a researcher's would be: mlflow.db and checkpoints land here."""
    monkeypatch.chdir(tmp_path)
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: an earlier run in this process must not steer this one
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small tensors and models: they run several times faster on one thread than
    on two cores that other jobs share (OpenMP spin-waits). A module asks for it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the real data files are not here ({SHARED_DATA}); CI has them beside the project")
    return SHARED_DATA


def pytest_terminal_summary(terminalreporter) -> None:
    """How many malformed inputs the loaders were tried on (tests/test_bad_inputs*.py: one test per case)."""
    reports = [
        report
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if report.when == "call" and "test_bad_inputs" in report.nodeid
    ]
    if reports:
        passed = sum(report.passed for report in reports)
        failed = len(reports) - passed
        terminalreporter.write_line(f"bad-input cases tried: {len(reports)} ({passed} passed, {failed} failed)")
