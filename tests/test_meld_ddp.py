"""The meld experiment with two processes (DDP over gloo on the CPU): one MLflow parent run and one child run per
training, written by rank 0 only, with metrics synchronised across the processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from builders import ROOT, child_env, free_port

TINY = [
    "model.text.random_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}",
    "model.text.max_length=24", "tasks=[meld]", "data.meld.dir=null", "data.meld.train_size=32",
    "data.meld.dev_size=16", "approaches=[text,features]", "trainer.max_epochs=1", "data.batch_size=8",
    "model.features.dim=16", "model.features.heads=2",
]


@pytest.mark.slow
def test_two_processes_log_one_parent_run_with_one_child_per_training(workdir):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    command = [str(Path(sys.executable).parent / "lightning"), "run", str(ROOT / "experiments" / "meld.py"),
               "--accelerator", "cpu", "--devices", "2", "--main-port", str(free_port()), *TINY,
               f"mlflow.tracking_uri={uri}"]
    done = subprocess.run(command, cwd=workdir, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "distributed_backend=gloo" in done.stderr + done.stdout

    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "meld"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    (parent,) = parents
    assert parent.data.params["trainer.devices"] == "2" and parent.info.status == "FINISHED"
    children = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    assert children == ["meld/features", "meld/text"] and len(runs) == 3
    for child in runs:
        if child.info.run_id != parent.info.run_id:
            assert "test/f1_weighted" in child.data.metrics and "train/loss" in child.data.metrics
    assert 0.0 <= parent.data.metrics["meld/text/f1_weighted"] <= 1.0
