"""A tracking server that goes away in the middle of a run: training goes on and no metric is lost.

Both tests stop a real `mlflow server` (SQLite store, loopback) and start it again on the same port and store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from affectlab.lab.tracking import PENDING_DIR, ResilientClient, import_pending
from conftest import ROOT, TINY_RUN, free_port
from test_mlflow_server import start_server, stop_server

EPOCHS = 6
# MLflow's own retries kept short, so that the first failed write returns quickly (ResilientClient retries itself)
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {seconds:.0f} s waiting for {what}")


@pytest.mark.slow  # a real training process and a real mlflow server, stopped and started again
def test_training_survives_a_server_outage_and_every_metric_arrives(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    workdir = tmp_path / "work"
    workdir.mkdir()
    log = workdir / "training.log"
    command = [
        sys.executable, str(ROOT / "experiments" / "raer.py"), *TINY_RUN, f"trainer.max_epochs={EPOCHS}",
        f"mlflow.tracking_uri={uri}", f"checkpoint_dir={workdir / 'ckpt'}", "mlflow.retry_seconds=1",
    ]
    env = {**os.environ, **QUICK_HTTP, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("w") as handle:
        training = subprocess.Popen(command, cwd=workdir, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        client = MlflowClient(uri)

        def first_epoch_logged() -> bool:
            experiment = client.get_experiment_by_name("raer")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            return bool(runs) and "val/uar" in runs[0].data.metrics

        wait_for(lambda: training.poll() is not None or first_epoch_logged(), 1800, "the first epoch's metrics")
        assert training.poll() is None, log.read_text()[-3000:]
        stop_server(server)  # the server goes away in the middle of the run
        wait_for(lambda: "is unreachable" in log.read_text() or training.poll() is not None, 900,
                 "the training to notice the outage")  # generous: a loaded machine
        assert "is unreachable" in log.read_text(), "the run ended before meeting the outage: " + log.read_text()[-3000:]
        time.sleep(2)  # a few more writes pile up while the server is away
        assert training.poll() is None, "the outage stopped the training: " + log.read_text()[-3000:]
        server = start_server(tmp_path, port)  # back, on the same port with the same store
        assert training.wait(timeout=1800) == 0, log.read_text()[-5000:]

        client = MlflowClient(uri)  # read back from the server that came back
        runs = client.search_runs([client.get_experiment_by_name("raer").experiment_id])
        assert len(runs) == 1
        logged = runs[0]
        run_id = logged.info.run_id
        for name in ("train/loss", "val/uar", "val/war", "val/f1_macro"):
            steps = {m.step for m in client.get_metric_history(run_id, name)}
            assert len(steps) == EPOCHS, (name, sorted(steps))  # every epoch's value arrived
        assert {"test/uar", "test/war", "test/f1_macro"} <= set(logged.data.metrics)
        assert logged.data.params["model.backbone"] == "affectlab-tiny"
        assert logged.info.status == "FINISHED"
        names = {item.path for item in client.list_artifacts(run_id)}
        assert {"config.yaml", "confusion_matrix.png", "checkpoints"} <= names
        assert not list((workdir / PENDING_DIR).glob("*.jsonl"))  # everything was sent: nothing left to import
    finally:
        if training.poll() is None:
            training.kill()
        stop_server(server)


def test_writes_left_unsent_at_the_end_are_kept_and_imported(tmp_path, monkeypatch):
    for key, value in QUICK_HTTP.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    try:
        plain = MlflowClient(uri)
        run_id = plain.create_run(plain.create_experiment("outage")).info.run_id
        client = ResilientClient(plain, retry_seconds=0.5, wait_at_end=1.0, spool_dir=tmp_path / PENDING_DIR)
        client.log_metric(run_id, "loss", 1.0, step=0)  # sent at once: the server is up
        stop_server(server)
        artifact = tmp_path / "notes.txt"
        artifact.write_text("written during the outage\n")
        for step in range(1, 4):
            client.log_metric(run_id, "loss", 1.0 / (step + 1), step=step)  # never raises
        client.log_param(run_id, "lr", "0.001")
        client.log_artifact(run_id, str(artifact))
        artifact.unlink()  # the spool keeps its own copy
        client.set_terminated(run_id)
        client.close()  # the server does not come back in time: the writes stay in the spool file
        spool = client.spool_file
        assert spool is not None and spool.is_file()

        server = start_server(tmp_path, port)
        assert import_pending(spool, uri) == 6
        plain = MlflowClient(uri)
        assert [m.value for m in sorted(plain.get_metric_history(run_id, "loss"), key=lambda m: m.step)] == [
            1.0, 0.5, 1 / 3, 0.25]
        logged = plain.get_run(run_id)
        assert logged.data.params["lr"] == "0.001" and logged.info.status == "FINISHED"
        assert [a.path for a in plain.list_artifacts(run_id)] == ["notes.txt"]
    finally:
        stop_server(server)
