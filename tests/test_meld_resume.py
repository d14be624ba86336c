"""Crash and resume for the meld experiment: a real `experiments/meld.py` killed with SIGKILL in the middle of an epoch
and run again with resume=auto skips the training it had finished, continues the one it was in from its mid-epoch
checkpoint into the same MLflow runs, and ends with the same metrics as the same run left alone."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from affectlab.lab.checkpoints import newest_intact, read_record
from affectlab.lab.config import ConfigError
from affectlab.lab.meld import main
from builders import ROOT, child_env, history, kill_when, start, step_reached

STEPS_PER_EPOCH = 17  # 80 synthetic utterances minus the validation 15% (12) = 68, in batches of 4
RUN = [
    "model.text.random_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}",
    "model.text.max_length=16", "tasks=[meld]", "data.meld.dir=null", "data.meld.train_size=80",
    "data.meld.dev_size=24", "approaches=[features,transcript]", "data.batch_size=4", "trainer.max_epochs=3",
    "model.features.dim=16", "model.features.heads=2", "checkpoint_every.steps=1", "trainer.log_every_n_steps=1",
]


def command(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "experiments" / "meld.py"), *RUN,
            f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}", f"checkpoint_dir={workdir / 'ckpt'}", *extra]


def runs_by_name(uri: str) -> tuple[MlflowClient, dict]:
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("meld").experiment_id])
    names = [r.info.run_name if "mlflow.parentRunId" in r.data.tags else "parent" for r in runs]
    assert len(set(names)) == len(names), f"a run was started twice: {sorted(names)}"
    return client, dict(zip(names, runs))


@pytest.mark.slow  # real processes: one run left alone, one killed and resumed
def test_killed_mid_epoch_and_resumed_equals_the_run_left_alone(tmp_path):
    env = child_env()
    alone_dir, killed_dir = tmp_path / "alone", tmp_path / "killed"
    alone_dir.mkdir()
    killed_dir.mkdir()
    started = time.monotonic()
    alone = subprocess.run(command(alone_dir), cwd=alone_dir, env=env, capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr[-5000:]
    process = start(command(killed_dir), killed_dir)
    # kill -9 once the transcript model (the second training) has checkpointed a step of its second epoch
    kill_when(process, step_reached(killed_dir / "ckpt", "*/meld--transcript/step-latest.ckpt", STEPS_PER_EPOCH + 1))

    (run_folder,) = (killed_dir / "ckpt").iterdir()
    target = newest_intact(run_folder)
    record = read_record(target)
    print(f"killed; resuming from {target.parent.name}/{target.name} at step {record['global_step']}")
    assert target.parent.name == "meld--transcript" and record["global_step"] % STEPS_PER_EPOCH != 0, record
    assert (run_folder / "meld--features" / "result.json").is_file()  # the first training had been tested
    uri = f"sqlite:///{killed_dir / 'mlflow.db'}"
    _, before = runs_by_name(uri)
    assert before["parent"].info.status == "RUNNING"
    assert record["mlflow_run_id"] == before["meld/transcript"].info.run_id

    done = subprocess.run(command(killed_dir, "resume=auto"), cwd=killed_dir, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    assert "meld/features: tested before the resume" in done.stdout
    print(f"three runs in {time.monotonic() - started:.1f} s")

    # (a) the same MLflow runs continued and finished, none started again
    client, resumed = runs_by_name(uri)
    assert {name: r.info.run_id for name, r in resumed.items()} == {n: r.info.run_id for n, r in before.items()}
    assert resumed["parent"].info.status == "FINISHED" and resumed["meld/transcript"].info.status == "FINISHED"
    # (b) the same metrics as the run left alone: every epoch's curve and the test results, and the summary
    alone_client, left_alone = runs_by_name(f"sqlite:///{alone_dir / 'mlflow.db'}")
    for name in ("train/loss", "val/f1_weighted", "val/accuracy"):
        curve = history(client, resumed["meld/transcript"].info.run_id, name)
        assert len(curve) == 3 and curve == history(alone_client, left_alone["meld/transcript"].info.run_id, name)
    for run_name in ("meld/transcript", "parent"):
        expected = {k: v for k, v in left_alone[run_name].data.metrics.items() if "f1" in k or "accuracy" in k}
        assert len(expected) >= 4
        assert {k: resumed[run_name].data.metrics.get(k) for k in expected} == expected, run_name


def test_resume_names_a_checkpoint_outside_a_meld_run(tmp_path):
    with pytest.raises(ConfigError, match=r"resume='.*nothing\.ckpt': no such checkpoint file"):
        main([*RUN, f"checkpoint_dir={tmp_path}", f"resume={tmp_path / 'nothing.ckpt'}",
              f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"])
