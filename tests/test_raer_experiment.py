"""The RAER experiment end to end on tiny synthetic data: MLflow read back, launcher, resume, overfitting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from affectlab.lab.config import load_config
from affectlab.models import create_clip
from affectlab.lab.raer.nets import build_net
from affectlab.lab.raer.train import train as run
from builders import TINY_RUN, only_run

CLASSES = ["Neutrality", "Enjoyment", "Confusion", "Fatigue", "Distraction"]


def tiny_cfg(workdir: Path, *extra: str):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    return load_config("raer", [*TINY_RUN, f"mlflow.tracking_uri={uri}", f"checkpoint_dir={workdir}/ckpt", *extra], environ={})


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_run_is_logged_to_mlflow_and_read_back(workdir):
    metrics = run(tiny_cfg(workdir, "trainer.max_epochs=2", "mlflow.tags.purpose=test"))
    client, logged = only_run(f"sqlite:///{workdir / 'mlflow.db'}")
    assert logged.data.params["data.num_segments"] == "4"
    assert logged.data.params["model.backbone"] == "affectlab-tiny"
    assert logged.data.tags["purpose"] == "test"
    # named by the clock, not by MLflow's generator, which draws from the `random` module every run seeds alike
    assert re.fullmatch(r"raer-\d{8}-\d{6}", logged.info.run_name), logged.info.run_name
    for name in ("train/loss", "val/uar", "val/war", "val/f1_macro"):
        assert len(client.get_metric_history(logged.info.run_id, name)) == 2, name  # one value per epoch
    for name in ["test/uar", "test/war", "test/f1_macro"] + [f"test/recall/{c}" for c in CLASSES]:
        assert name in logged.data.metrics, name
        assert 0.0 <= logged.data.metrics[name] <= 1.0
    assert logged.data.metrics["test/uar"] == pytest.approx(metrics["test/uar"])
    # UAR is the mean of the per-class recalls
    recalls = [logged.data.metrics[f"test/recall/{c}"] for c in CLASSES]
    assert sum(recalls) / len(recalls) == pytest.approx(logged.data.metrics["test/uar"], abs=1e-5)
    artifacts = artifact_paths(client, logged.info.run_id)
    assert {"config.yaml", "confusion_matrix.png"} <= artifacts
    assert any(p.startswith("checkpoints/best-") and p.endswith(".ckpt") for p in artifacts), artifacts
    assert (workdir / "mlartifacts").is_dir() or logged.info.artifact_uri.startswith("file:")


def test_default_store_is_sqlite_in_the_working_directory(workdir):
    cfg = tiny_cfg(workdir)
    cfg.mlflow.tracking_uri = None
    run(cfg)
    assert (workdir / "mlflow.db").is_file()
    client, logged = only_run(f"sqlite:///{workdir / 'mlflow.db'}")
    assert logged.info.artifact_uri.startswith((workdir / "mlartifacts").as_uri())


def test_overfits_one_batch(workdir):
    # the same 4 clips every epoch (Lightning turns the shuffling off: it sees the loader's real sampler), their frames
    # drawn anew (TSN): 11.3 -> 0.23 in 12 epochs at seed 0, 9.3 -> 1.5 at seed 3 (the ratio is the margin)
    cfg = tiny_cfg(workdir, "trainer.overfit_batches=1", "trainer.max_epochs=12", "data.batch_size=4")
    run(cfg)
    client, logged = only_run(f"sqlite:///{workdir / 'mlflow.db'}")
    losses = [m.value for m in client.get_metric_history(logged.info.run_id, "train/loss")]
    assert losses[-1] < 0.2 * losses[0], losses


def test_resume_continues_the_same_mlflow_run(workdir):
    run(tiny_cfg(workdir, "trainer.max_epochs=1"))
    client, first = only_run(f"sqlite:///{workdir / 'mlflow.db'}")
    last = next((workdir / "ckpt").glob("*/last.ckpt"))
    steps_per_epoch = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    run(tiny_cfg(workdir, "trainer.max_epochs=2", "resume=auto"))
    client, resumed = only_run(f"sqlite:///{workdir / 'mlflow.db'}")
    assert resumed.info.run_id == first.info.run_id
    epochs = [m.step for m in client.get_metric_history(resumed.info.run_id, "val/uar")]
    assert len(epochs) == 2  # epoch 0 from the first run, epoch 1 from the resumed one
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2 * steps_per_epoch


def test_pretrained_weights_from_a_saved_file(workdir):
    torch.manual_seed(7)
    clip = create_clip("affectlab-tiny")
    weights = workdir / "tiny_clip.pt"
    torch.save(clip.model.state_dict(), weights)
    torch.manual_seed(8)  # a different random init: only the file can make the weights equal
    loaded, _, _ = build_net(tiny_cfg(workdir, f"model.pretrained={weights}"))
    encoder = {f"visual.{k}": v for k, v in loaded.image_encoder.state_dict().items()}
    saved = clip.model.state_dict()
    assert encoder and all(torch.equal(value, saved[name]) for name, value in encoder.items())
