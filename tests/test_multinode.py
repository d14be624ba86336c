"""Multi-node: two `lightning run --num-nodes 2 --node-rank R` launchers on loopback, one process each, train together."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from affectlab.datasets import ensure_synthetic_raer
from affectlab.lab.config import load_config
from builders import ROOT, TINY_RUN, free_port

SMALL = [*TINY_RUN, "data.synthetic.num_train=20", "data.synthetic.num_test=10"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_nodes_on_loopback_train_as_one_run(workdir: Path):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    args = [*SMALL, f"mlflow.tracking_uri={uri}", f"checkpoint_dir={workdir}/ckpt"]
    # the data is on shared storage before a multi-node job starts, as on a cluster
    ensure_synthetic_raer(**load_config("raer", args, environ={}).data.synthetic)
    port = free_port()
    lightning = str(Path(sys.executable).parent / "lightning")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [lightning, "run", "--accelerator", "cpu", "--devices", "1", "--num-nodes", "2", "--node-rank", str(rank),
             "--main-address", "127.0.0.1", "--main-port", str(port), str(ROOT / "experiments" / "raer.py"), *args],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]
    try:
        outputs = [node.communicate(timeout=840)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for rank, (node, output) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, f"node {rank}:\n{output[-5000:]}"
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in outputs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("raer").experiment_id])
    assert len(runs) == 1, f"expected one MLflow run for the two nodes, found {len(runs)}"
    logged = runs[0]
    assert logged.data.params["trainer.num_nodes"] == "2"
    for name in ("train/loss", "val/uar"):
        assert len(client.get_metric_history(logged.info.run_id, name)) == 1, name  # one epoch, logged once
    assert 0.0 <= logged.data.metrics["test/uar"] <= 1.0
    # every test clip counted once across the two nodes
    counted = sum(v for k, v in logged.data.metrics.items() if k.startswith("test/context/") and k.endswith("/clips"))
    assert counted == 10
