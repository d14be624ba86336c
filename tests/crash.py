"""What the crash-and-resume tests share: the environment of their child processes, starting one, killing it with
SIGKILL at a step checkpoint, and reading a metric's curve back from MLflow."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from affectlab.lab.checkpoints import read_record


def child_env() -> dict[str, str]:
    """One thread per child (the machine is shared), nothing downloaded, and no MLflow URI leaking in from a test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def start(command: list[str], workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=workdir, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def step_reached(folder: Path, pattern: str, step: int):
    """A condition for `kill_when`: a step checkpoint matching `pattern` under `folder` records `step` or later."""

    def reached() -> bool:
        records = [read_record(path) for path in folder.glob(pattern)]
        return any(record and record["global_step"] >= step for record in records)

    return reached


def kill_when(process: subprocess.Popen, ready, seconds: float = 600) -> None:
    """SIGKILL the process as soon as `ready()` is true; fails if it ended first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None and not ready():
        time.sleep(0.01)
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-3000:]}"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def history(client: MlflowClient, run_id: str, name: str) -> dict[int, float]:
    """Metric values by step (a step logged before the kill and again after the resume keeps its last value)."""
    return {m.step: m.value for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.timestamp)}
