"""resume=auto goes to the latest epoch, not the best one: each experiment's real process is killed at a late epoch,
after its best, and started again; the resumed run trains only the epochs that were left (each epoch's loss is
logged once) and ends with every epoch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from affectlab.lab.checkpoints import newest_intact, read_record
from builders import ROOT, TINY_CEXPR, TINY_RUN, child_env, kill_when, start

EPOCHS = 6


def epoch_reached(folder: Path, epoch: int):
    """A condition for `kill_when`: some last.ckpt under `folder` records `epoch` or later (that epoch is over). (Only
    files: asking MLflow takes the test process seconds the first time, in which a tiny run ends its training.)"""

    def reached() -> bool:
        records = [read_record(path) for path in folder.rglob("last.ckpt")]
        return any(record and record["epoch"] is not None and record["epoch"] >= epoch for record in records)

    return reached


def losses(uri: str, experiment: str, name: str) -> list[int]:
    """The steps at which every run of the experiment logged `name` (a training's runs: one, or a sweep's children)."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return [m.step for run in runs for m in client.get_metric_history(run.info.run_id, name)]


CASES = {
    # no learning (rates 0): the best validation UAR is the first epoch's, every later epoch only ties it
    "raer": [*TINY_RUN, f"trainer.max_epochs={EPOCHS}", "optim.lr.temporal=0", "optim.lr.image_encoder=0",
             "optim.lr.prompt=0", "optim.lr.projection=0"],
    "meld": ["model.text.random_config={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, "
             "intermediate_size: 32}", "tasks=[meld]", "data.meld.dir=null", "approaches=[features]",
             "data.meld.train_size=60", "data.meld.dev_size=20", f"trainer.max_epochs={EPOCHS}",
             "model.text.max_length=16", "data.batch_size=10", "model.features.dim=8", "model.features.heads=2"],
    "cexpr": [*TINY_CEXPR, "data.train_samples_per_epoch=20000", f"trainer.max_epochs={EPOCHS}",
              "early_stopping.patience=100", "visual.modalities=[]", "ablation=false"],
}
LOSS = {"raer": "train/loss", "meld": "train/loss", "cexpr": "train/loss"}


@pytest.mark.slow  # real processes, killed and started again
@pytest.mark.timeout(900)
@pytest.mark.parametrize("experiment", list(CASES))
def test_a_run_killed_after_its_best_epoch_resumes_from_its_latest(experiment, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [sys.executable, str(ROOT / "experiments" / f"{experiment}.py"), *CASES[experiment],
               f"mlflow.tracking_uri={uri}", f"checkpoint_dir={tmp_path / 'ckpt'}", "checkpoint_every.minutes=null"]
    process = start(command, tmp_path)

    kill_when(process, epoch_reached(tmp_path / "ckpt", 2))

    # what resume=auto continues from (meld's checkpoints are one folder deeper: <run>/<training>/)
    root = tmp_path / "ckpt" if experiment != "meld" else next((tmp_path / "ckpt").iterdir())
    latest = newest_intact(root)
    record = read_record(latest)
    assert latest.name == "last.ckpt" and record["epoch"] >= 2, (latest, record)
    # epochs 0 and 1 logged at least (epoch 2's loss is logged just after its last.ckpt: a kill in between leaves it
    # to the resumed run)
    assert len(set(losses(uri, experiment, LOSS[experiment]))) >= 2

    done = subprocess.run([*command, "resume=auto"], cwd=tmp_path, env=child_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    steps = losses(uri, experiment, LOSS[experiment])
    # every epoch's loss exactly once: the resumed run started after the latest epoch, not after the best one
    assert len(steps) == EPOCHS and len(set(steps)) == EPOCHS, steps
