"""A tracking server that goes away in the middle of a run: training goes on and no metric is lost.

Both tests stop a real `mlflow server` (SQLite store, loopback) and start it again on the same port and store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from affectlab.lab.resilient import OFFLINE_PREFIX, PENDING_DIR, import_pending
from affectlab.lab.tracking import ResilientMLFlowLogger
from builders import ROOT, TINY_RUN, free_port, start_server, stop_server

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


@pytest.mark.slow  # a real MLflow server started, stopped and started again (~30 s)
def test_nested_runs_created_during_an_outage_are_created_when_the_server_is_back(tmp_path, monkeypatch):
    for key, value in QUICK_HTTP.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # the default spool, ./mlflow-pending, shared by the client and the logger
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    try:
        experiment = MlflowClient(uri).create_experiment("nested")
        parent_logger = ResilientMLFlowLogger(experiment_name="nested", run_name="parent", tracking_uri=uri, retry_seconds=0.5,
                                              wait_at_end=1.0)  # a run's own logger, as make_logger builds it
        client = parent_logger.experiment
        parent = parent_logger.run_id  # the server is up: its own id
        assert not parent.startswith(OFFLINE_PREFIX)
        stop_server(server)

        child = client.create_run(experiment, run_name="child", tags={"mlflow.parentRunId": parent})  # never raises
        assert child.info.run_id.startswith(OFFLINE_PREFIX) and child.info.run_name == "child"
        logger = ResilientMLFlowLogger(experiment_name="nested", tracking_uri=uri, run_id=child.info.run_id,
                                       retry_seconds=0.5, wait_at_end=1.0)  # as make_logger does for a nested run
        assert logger.experiment_id == experiment
        logger.log_metrics({"acc": 0.25}, step=0)
        logger.log_metrics({"acc": 0.5}, step=1)
        grandchild = logger.experiment.create_run(experiment, run_name="grandchild",
                                                  tags={"mlflow.parentRunId": logger.run_id}).info.run_id
        client.log_metric(grandchild, "f1", 0.75)
        logger.finalize("success")
        client.log_metric(parent, "done", 1.0)
        assert client.pending == 7  # the child, its 2 metrics, its end, the grandchild, its metric, the parent's

        server = start_server(tmp_path, port)  # back while the process still runs: everything goes out in order
        assert client.flush(120), f"{client.pending} writes still unsent"
        runs = {run.info.run_name: run for run in MlflowClient(uri).search_runs([experiment])}
        assert set(runs) == {"parent", "child", "grandchild"}
        assert runs["child"].data.tags["mlflow.parentRunId"] == parent
        assert runs["grandchild"].data.tags["mlflow.parentRunId"] == runs["child"].info.run_id
        history = MlflowClient(uri).get_metric_history(runs["child"].info.run_id, "acc")
        assert sorted((m.step, m.value) for m in history) == [(0, 0.25), (1, 0.5)]
        assert runs["child"].info.status == "FINISHED"
        assert runs["grandchild"].data.metrics == {"f1": 0.75} and runs["parent"].data.metrics == {"done": 1.0}
        assert client.get_run(child.info.run_id).info.run_id == runs["child"].info.run_id  # the offline id still reads

        stop_server(server)  # a second outage that outlasts the process: the spool file creates the run on import
        late = client.create_run(experiment, run_name="late", tags={"mlflow.parentRunId": parent}).info.run_id
        for step in range(3):
            client.log_metric(late, "loss", 1.0 / (step + 1), step=step)
        client.log_param(late, "lr", "0.001")
        artifact = tmp_path / "notes.txt"
        artifact.write_text("written during the outage\n")
        client.log_artifact(late, str(artifact))
        artifact.unlink()  # the spool keeps its own copy
        parent_logger.finalize("success")  # the last open logger: waits wait_at_end for the server, then keeps the spool
        spool = client.spool_file
        assert spool is not None and spool.is_file()

        server = start_server(tmp_path, port)
        assert import_pending(spool, uri) == 7  # the run, 3 metrics, a param, an artifact, the parent's end
        plain = MlflowClient(uri)
        runs = {run.info.run_name: run for run in plain.search_runs([experiment])}
        late = runs["late"].info.run_id
        assert runs["late"].data.tags["mlflow.parentRunId"] == parent and runs["late"].data.params["lr"] == "0.001"
        assert [m.value for m in sorted(plain.get_metric_history(late, "loss"), key=lambda m: m.step)] == [
            1.0, 0.5, 1 / 3]
        assert [a.path for a in plain.list_artifacts(late)] == ["notes.txt"]
        assert runs["parent"].info.status == "FINISHED"
    finally:
        stop_server(server)
