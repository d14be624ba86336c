"""Crash and resume for the probing experiment, with real processes killed by SIGKILL:

1. killed while it extracts the hidden states (its progress lines already in its log file: flushed as they happen);
2. started again with resume=auto, it continues the same MLflow run and extracts only the shards still missing;
   killed again while the MLP probes train, at an epoch after the best one;
3. started again with resume=auto, it goes on from that latest epoch (not the best one) and ends with the metrics,
   validation curves and best epochs of the same run left alone.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from affectlab.lab.checkpoints import read_record
from affectlab.lab.probing import main
from builders import ROOT, child_env, emotion_texts, history, kill_when, write_table

LAYERS = (0, 3, 6)
PATIENCE = 6


def probing_args(workdir: Path, data: Path, cache: Path) -> list[str]:
    return [
        "data.source=files", f"data.train={data / 'train.csv'}", f"data.test={data / 'test.csv'}",
        "data.val_fraction=0.2", "model.shard_size=12", f"model.layers=[{','.join(map(str, LAYERS))}]",
        "probe.kind=mlp", "probe.monitor=f1_weighted", f"probe.patience={PATIENCE}", "probe.batch_size=16",
        "trainer.max_epochs=100", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        "report.resamples=100", "num_threads=1", f"cache_dir={cache}", f"checkpoint_dir={workdir / 'ckpt'}",
        f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
    ]


def only_run(workdir: Path):
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("probing").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, f"expected one MLflow run, found {len(parents)}"
    return client, parents[0]


def launch(args: list[str], workdir: Path, log: Path, env: dict) -> subprocess.Popen:
    with log.open("w") as handle:  # a file, as a batch job's output would be
        return subprocess.Popen([sys.executable, str(ROOT / "experiments" / "probing.py"), *args], cwd=workdir,
                                env=env, stdout=handle, stderr=subprocess.STDOUT, text=True)


def epochs_checkpointed(workdir: Path) -> int:
    """Training epochs completed by the newest epoch-end checkpoint of the MLP probes (0: none yet)."""
    records = [read_record(p) for p in (workdir / "ckpt").glob("*/probes/last.ckpt")]
    return max((record["epoch"] + 1 for record in records if record), default=0)


@pytest.mark.slow  # three real processes, two of them killed
@pytest.mark.timeout(600)
def test_probing_killed_in_extraction_then_after_the_best_epoch_resumes_to_the_run_left_alone(
        tmp_path: Path, monkeypatch):
    data = tmp_path / "data"
    write_table(data / "train.csv", emotion_texts(16))
    write_table(data / "test.csv", emotion_texts(4, offset=100))
    alone_dir, killed_dir = tmp_path / "alone", tmp_path / "killed"
    alone_dir.mkdir()
    killed_dir.mkdir()
    monkeypatch.chdir(alone_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    alone = main(probing_args(alone_dir, data, tmp_path / "alone-features"))
    best = max(int(alone[f"best_epoch/layer_{layer:02d}"]) for layer in LAYERS)
    assert alone["epochs_run"] == best + PATIENCE

    args, env = probing_args(killed_dir, data, tmp_path / "features"), child_env()
    shards = tmp_path / "features"
    first = launch(args, killed_dir, killed_dir / "first.log", env)
    kill_when(first, lambda: len(list(shards.glob("*/shards/00002.json"))) > 0)
    done_shards = len(list(shards.glob("*/shards/0*.json")))
    total = -(-int(alone["test_examples"] + alone["train_examples"] + alone["val_examples"]) // 12)
    assert 0 < done_shards < total
    assert "extracted shard 1 of" in (killed_dir / "first.log").read_text()  # flushed before the kill
    _, before = only_run(killed_dir)
    assert before.info.status == "RUNNING"

    second = launch([*args, "resume=auto"], killed_dir, killed_dir / "second.log", env)
    kill_when(second, lambda: epochs_checkpointed(killed_dir) > best, seconds=300)
    killed_at = epochs_checkpointed(killed_dir)
    assert best < killed_at < alone["epochs_run"], (best, killed_at, alone["epochs_run"])
    extracted = re.findall(r"extracted shard (\d+) of (\d+)", (killed_dir / "second.log").read_text())
    assert len(extracted) == total - done_shards  # only the missing shards

    third = subprocess.run([sys.executable, str(ROOT / "experiments" / "probing.py"), *args, "resume=auto"],
                           cwd=killed_dir, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert f"continuing from {killed_dir / 'ckpt'}" in third.stdout and "extracted shard" not in third.stdout
    client, resumed = only_run(killed_dir)
    assert resumed.info.run_id == before.info.run_id and resumed.info.status == "FINISHED"
    alone_client, left_alone = only_run(alone_dir)
    for layer in LAYERS:
        name = f"val/f1_weighted/layer_{layer:02d}"
        assert history(client, resumed.info.run_id, name) == history(alone_client, left_alone.info.run_id, name)
        # each epoch validated once: the third process went on after the latest epoch, not the best one or the first
        assert len(client.get_metric_history(resumed.info.run_id, name)) == alone["epochs_run"]
    results = {k: v for k, v in left_alone.data.metrics.items() if k.startswith(("test/", "best", "baseline/"))}
    assert len(results) > 50
    assert {k: resumed.data.metrics.get(k) for k in results} == results
