"""The probing experiment in two processes (`lightning run --devices 2`): each rank extracts its own shards of the
hidden states, the probes train and report on rank 0 alone, into one MLflow run, with the metrics of one process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from affectlab.lab.probing import main
from builders import ROOT, child_env, emotion_texts, free_port, write_table


@pytest.mark.slow  # two processes start, each importing torch, transformers, Lightning and MLflow
def test_two_processes_share_the_extraction_and_report_the_metrics_of_one(workdir: Path):
    write_table(workdir / "train.csv", emotion_texts(12))
    write_table(workdir / "test.csv", emotion_texts(4, offset=100))
    common = ["data.source=files", f"data.train={workdir / 'train.csv'}", f"data.test={workdir / 'test.csv'}",
              "data.val_fraction=0.2", "model.shard_size=10", "model.layers=[0,6]", "probe.kind=mlp",
              "probe.monitor=f1_weighted", "probe.patience=3", "report.resamples=100", "num_threads=1",
              "trainer.enable_progress_bar=false"]
    one = main([*common, "trainer.accelerator=cpu", f"cache_dir={workdir / 'one'}",
                f"mlflow.tracking_uri=sqlite:///{workdir / 'one.db'}", f"checkpoint_dir={workdir / 'ckpt-one'}"])

    uri = f"sqlite:///{workdir / 'two.db'}"
    command = [str(Path(sys.executable).parent / "lightning"), "run", "--accelerator", "cpu", "--devices", "2",
               "--main-port", str(free_port()), str(ROOT / "experiments" / "probing.py"), *common,
               f"cache_dir={workdir / 'two'}", f"mlflow.tracking_uri={uri}", f"checkpoint_dir={workdir / 'ckpt-two'}"]
    done = subprocess.run(command, cwd=workdir, env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    shards = {rank: {int(k) for r, k in re.findall(r"\[rank (\d)\] extracted shard (\d+) of", done.stdout)
                     if int(r) == rank} for rank in (0, 1)}
    total = -(-int(one["train_examples"] + one["val_examples"] + one["test_examples"]) // 10)
    assert shards[0] and shards[1] and not shards[0] & shards[1] and shards[0] | shards[1] == set(range(1, total + 1))

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("probing").experiment_id])
    (run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert run.info.status == "FINISHED" and run.data.params["trainer.devices"] == "2"
    compared = {k: v for k, v in one.items() if k.startswith(("test/", "best", "baseline/", "epochs_run"))}
    assert {k: run.data.metrics[k] for k in compared} == pytest.approx(compared, abs=1e-6)
