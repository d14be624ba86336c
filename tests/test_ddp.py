"""DDP correctness: the same trained weights give the same validation and test metrics in 1 and in 2 processes.

What is comparable: training in 2 processes draws other batches than in 1 (each rank its own shuffled share), so the
weights would differ; evaluating one checkpoint is exact. The validation and test sets have an odd number of clips,
so the 2-process shards are padded, and a padded clip counted twice (or a clip dropped) changes WAR as long as WAR
is neither 0 nor 1, which the test checks; metrics not synchronised across processes would be rank 0's half only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from affectlab.datasets import ensure_synthetic_raer, load_label_set, load_raer_split, stratified_split
from affectlab.lab.config import load_config
from affectlab.lab.raer.train import train as run
from builders import ROOT, TINY_RUN, free_port, only_run

# Small odd splits: 20 training clips of which 35% per class (1 of 4) validate, 11 test clips.
SMALL = [*TINY_RUN, "data.synthetic.num_train=20", "data.synthetic.num_test=11", "data.val_fraction=0.35"]
COMPARED = ("val/uar", "val/war", "val/f1_macro", "test/uar", "test/war", "test/f1_macro")


def split_sizes(cfg) -> tuple[int, int]:
    root = ensure_synthetic_raer(**cfg.data.synthetic)
    labels = load_label_set(cfg.data.label_set)
    _, val = stratified_split(load_raer_split(root, "train", labels), cfg.data.val_fraction, seed=cfg.seed)
    return len(val), len(load_raer_split(root, "test", labels))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_processes_give_the_metrics_of_one(workdir: Path):
    trained_uri = f"sqlite:///{workdir / 'trained.db'}"
    common = [*SMALL, f"checkpoint_dir={workdir}/ckpt"]
    cfg = load_config("raer", [*common, f"mlflow.tracking_uri={trained_uri}"], environ={})
    num_val, num_test = split_sizes(cfg)
    assert num_val % 2 == 1 and num_test % 2 == 1, (num_val, num_test)  # so that 2 shards need padding

    trained = run(cfg)  # 1 process, 1 epoch: its validation and test ran on the weights the checkpoint holds
    client, logged = only_run(trained_uri)
    trained.update({k: logged.data.metrics[k] for k in ("val/uar", "val/war", "val/f1_macro")})
    checkpoint = next((workdir / "ckpt").glob("*/best-*.ckpt"))

    two_uri = f"sqlite:///{workdir / 'two.db'}"
    command = [str(Path(sys.executable).parent / "lightning"), "run", "--accelerator", "cpu", "--devices", "2",
               "--main-port", str(free_port()), str(ROOT / "experiments" / "raer.py"), "evaluate", *common,
               f"mlflow.tracking_uri={two_uri}", f"resume={checkpoint}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "distributed_backend=gloo" in done.stdout + done.stderr
    assert "Starting with 2 processes" in done.stdout + done.stderr

    client, two_run = only_run(two_uri)  # one MLflow run although two processes ran
    two = two_run.data.metrics
    for name in ("val/uar", "test/uar"):
        assert len(client.get_metric_history(two_run.info.run_id, name)) == 1, name  # logged once, not per rank
    for name in COMPARED:
        assert two[name] == pytest.approx(trained[name], abs=1e-6), name
    # not a degenerate model, for which a clip counted twice or dropped would go unnoticed
    assert 0.0 < two["val/war"] < 1.0 and 0.0 < two["test/war"] < 1.0, two
    # every test clip counted exactly once: the per-context clip counts add up to the test split
    counted = sum(v for k, v in two.items() if k.startswith("test/context/") and k.endswith("/clips"))
    assert counted == num_test
