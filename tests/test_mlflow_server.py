"""The RAER experiment against a real `mlflow server` on loopback, over HTTP, read back through mlflow's client."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from affectlab.lab.config import load_config
from affectlab.lab.raer.train import train as run
from affectlab.lab.tracking import TrackingError, check_server
from builders import TINY_RUN, free_port, start_server, stop_server


@pytest.fixture
def mlflow_server(tmp_path: Path):
    port = free_port()
    server = start_server(tmp_path, port)
    yield f"http://127.0.0.1:{port}", tmp_path / "server-artifacts"
    stop_server(server)


@pytest.mark.slow  # a real MLflow server process (~14 s)
def test_run_logs_to_a_tracking_server_over_http(workdir, mlflow_server):
    uri, artifact_root = mlflow_server
    cfg = load_config("raer", [*TINY_RUN, f"mlflow.tracking_uri={uri}", f"checkpoint_dir={workdir}/ckpt"], environ={})
    run(cfg)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("raer").experiment_id])
    assert len(runs) == 1
    logged = runs[0]
    assert logged.data.params["model.backbone"] == "affectlab-tiny"
    assert "test/uar" in logged.data.metrics and "val/uar" in logged.data.metrics
    names = {item.path for item in client.list_artifacts(logged.info.run_id)}
    assert {"config.yaml", "confusion_matrix.png", "checkpoints"} <= names
    # the artifacts went through the server into its own store, not into the working directory
    assert any(artifact_root.rglob("confusion_matrix.png"))
    assert not (workdir / "mlflow.db").exists()


def test_unreachable_server_is_a_clear_error_before_training():
    with pytest.raises(TrackingError, match=r"127.0.0.1:\d+ did not answer"):
        check_server(f"http://127.0.0.1:{free_port()}", timeout=2)
