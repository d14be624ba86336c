"""Shared fixtures: every test runs against caches and MLflow stores in temporary folders, never the user's."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

# Nothing is downloaded by the tests; set before huggingface_hub is first imported, which reads it once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# A run this small trains in seconds: 40 training clips of 8 frames, 4 frames sampled, 1 epoch.
TINY_RUN = [
    "data.synthetic.num_train=40",
    "data.synthetic.num_test=20",
    "data.synthetic.num_frames=8",
    "data.num_segments=4",
    "data.batch_size=8",
    "data.num_workers=0",
    "data.val_fraction=0.25",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
]


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


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the real data files are not here ({SHARED_DATA}); CI has them beside the project")
    return SHARED_DATA


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
