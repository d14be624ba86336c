"""Crash and resume of the C-EXPR-DB experiment: a real `experiments/cexpr.py` killed with SIGKILL in the middle of
MHPF's training and run again with resume=auto ends in the same MLflow run with the same metrics as the run left
alone; the face models' training, interrupted mid-fold, goes on from its checkpoint to the same probabilities."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from affectlab.lab.cexpr import main
from affectlab.lab.cexpr.modalities import FaceModule, cross_fitted
from affectlab.lab.checkpoints import newest_intact, read_record
from affectlab.models.face_expression import TemporalEmotionHead
from builders import ROOT, TINY_CEXPR, child_env, kill_when, only_run, start, step_reached

STEPS_PER_EPOCH, EPOCHS = 4, 4  # MHPF: 256 windows a epoch in batches of 64

RUN = [
    *TINY_CEXPR,
    "data.synthetic.num_basic_videos=8",
    "data.modalities=[audio,static_face,dynamic_face]",
    "visual.modalities=[static_face,dynamic_face]",
    "visual.frames_per_window=4",
    "face.frames_per_window=2",
    "face.static.epochs=2",
    "face.dynamic.epochs=4",
    "data.train_samples_per_epoch=256",
    "trainer.max_epochs=4",
    "early_stopping.patience=2",
    "checkpoint_every.steps=1",
]


def command(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "experiments" / "cexpr.py"), *RUN,
            f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}", *extra]


@pytest.mark.slow  # real processes: a run killed and resumed, beside the run left alone
def test_killed_in_fusion_training_and_resumed_equals_the_run_left_alone(tmp_path, monkeypatch):
    env = child_env()
    killed, alone = tmp_path / "killed", tmp_path / "alone"
    killed.mkdir()
    alone.mkdir()
    started = time.monotonic()

    process = start(command(killed), killed)
    # meanwhile the run left alone, in this process (it shares nothing with the other)
    monkeypatch.chdir(alone)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    expected = main([*RUN, f"mlflow.tracking_uri=sqlite:///{alone / 'mlflow.db'}"])

    # a mid-epoch checkpoint of MHPF's second epoch is on disk
    kill_when(process, step_reached(killed / "checkpoints" / "cexpr", "*/step-latest.ckpt", STEPS_PER_EPOCH + 1))
    target = newest_intact(killed / "checkpoints" / "cexpr")
    record = read_record(target)
    print(f"killed; resuming from {target.name} at step {record['global_step']} (epoch {record['epoch']})")
    assert record["global_step"] < STEPS_PER_EPOCH * EPOCHS, record  # in the middle of the training
    _, before = only_run(f"sqlite:///{killed / 'mlflow.db'}", "cexpr")
    assert before.info.status == "RUNNING" and record["mlflow_run_id"] == before.info.run_id

    done = subprocess.run(command(killed, "resume=auto"), cwd=killed, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    print(f"three runs in {time.monotonic() - started:.1f} s")

    _, resumed = only_run(f"sqlite:///{killed / 'mlflow.db'}", "cexpr")
    assert resumed.info.run_id == before.info.run_id and resumed.info.status == "FINISHED"
    metrics = {key: resumed.data.metrics.get(key) for key in expected}
    assert metrics == pytest.approx(expected, abs=1e-12, nan_ok=True)
    assert {"basic_val_f1/static_face", "basic_val_f1/dynamic_face", "compound_f1/fusion_pfsa_text"} <= set(metrics)


def test_face_training_killed_mid_fold_resumes_to_the_same_probabilities(tmp_path, monkeypatch):
    """The face models' stages: a fold finished is kept, the fold that was training goes on from its newest
    checkpoint (here the process "dies" by an exception at a given step; files are written as under kill -9), and
    the probabilities equal those of a training left alone."""
    generator = np.random.default_rng(0)
    labels = torch.as_tensor(generator.integers(0, 7, 60))
    embeddings = torch.randn(60, 4, 16) * 0.3
    embeddings[torch.arange(60), :, labels] += 1.0
    inputs = {"affwild2": embeddings, "cexpr": torch.randn(5, 4, 16)}
    targets = {"affwild2": labels, "cexpr": torch.zeros(5)}
    folds = {"affwild2": np.repeat(np.arange(6) % 2, 10)}
    spec = OmegaConf.create({"epochs": 3, "lr": 3e-3, "batch_size": 8})  # 4 steps per epoch, 12 per fold
    every = OmegaConf.create({"steps": 1, "minutes": None})

    def fit(folder: Path) -> dict[str, np.ndarray]:
        return cross_fitted(lambda: TemporalEmotionHead(16, 4, 8, depth=1, heads=2), inputs, targets, folds, 2, spec,
                            32, folder, seed=0, every=every)[0]

    alone = fit(tmp_path / "alone")
    steps = []
    original = FaceModule.training_step

    def dies_at_step_18(self, batch, batch_idx):
        steps.append(self.global_step)
        if len(steps) == 12 + 6 + 1:  # the whole fold 0, then six steps of fold 1
            raise RuntimeError("killed")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(FaceModule, "training_step", dies_at_step_18)
    with pytest.raises(RuntimeError, match="killed"):
        fit(tmp_path / "killed")
    assert (tmp_path / "killed" / "fold0.pt").is_file() and not (tmp_path / "killed" / "fold1.pt").exists()
    steps.clear()
    resumed = fit(tmp_path / "killed")
    assert steps == list(range(6, 12)), steps  # only fold 1's last six steps were trained again
    for half in alone:
        np.testing.assert_array_equal(resumed[half], alone[half])
