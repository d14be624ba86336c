"""Crash and resume for the probing experiment: a probe training killed with SIGKILL mid-epoch and resumed with
resume=auto continues the same MLflow run and ends with the same curves and per-layer results as the run left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from affectlab.lab.checkpoints import newest_intact, read_record
from affectlab.lab.probing import main
from affectlab.lab.probing.data import BUNDLED_CORPUS
from builders import ROOT, child_env, history, kill_when, start, step_reached

BATCH = 4
EPOCHS = 3


def probing_args(workdir: Path, cache: Path) -> list[str]:
    return [
        f"data.source={BUNDLED_CORPUS}", "model.layers=[0.0,0.5,1.0]", f"probe.batch_size={BATCH}",
        f"trainer.max_epochs={EPOCHS}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "checkpoint_every.steps=1", "num_threads=1", f"cache_dir={cache}",
        f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}", f"checkpoint_dir={workdir / 'ckpt'}",
    ]


def only_run(workdir: Path):
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("probing").experiment_id])
    assert len(runs) == 1, f"expected one MLflow run, found {len(runs)}"
    return client, runs[0]


@pytest.mark.slow  # real processes: a probing run killed and resumed, beside the same run left alone
def test_probing_killed_mid_epoch_and_resumed_equals_the_run_left_alone(tmp_path, monkeypatch):
    cache = tmp_path / "features"  # extracted once by the run left alone, read by the other two
    alone_dir, killed_dir = tmp_path / "alone", tmp_path / "killed"
    alone_dir.mkdir()
    killed_dir.mkdir()
    monkeypatch.chdir(alone_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    alone_summary = main(probing_args(alone_dir, cache))
    steps_per_epoch = -(-int(alone_summary["train_examples"]) // BATCH)

    command = [sys.executable, str(ROOT / "experiments" / "probing.py"), *probing_args(killed_dir, cache)]
    process = start(command, killed_dir)
    kill_when(process, step_reached(killed_dir / "ckpt", "*/step-latest.ckpt", steps_per_epoch + 2))
    target = newest_intact(killed_dir / "ckpt")
    record = read_record(target)
    assert record["global_step"] % steps_per_epoch != 0 and record["global_step"] < EPOCHS * steps_per_epoch, record
    _, before = only_run(killed_dir)
    assert before.info.status == "RUNNING" and record["mlflow_run_id"] == before.info.run_id

    done = subprocess.run([*command, "resume=auto"], cwd=killed_dir, env=child_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    client, resumed = only_run(killed_dir)
    assert resumed.info.run_id == before.info.run_id and resumed.info.status == "FINISHED"
    alone_client, alone = only_run(alone_dir)
    curve = history(client, resumed.info.run_id, "train/loss_epoch")
    assert len(curve) == EPOCHS and curve == history(alone_client, alone.info.run_id, "train/loss_epoch")
    results = {k: v for k, v in alone.data.metrics.items() if k.startswith(("test/", "summary/"))}
    assert len(results) > 10
    assert {k: resumed.data.metrics.get(k) for k in results} == results
