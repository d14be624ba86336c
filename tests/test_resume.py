"""Crash and resume: checkpoints are atomic, resume=auto skips damaged ones, and a training process killed with
SIGKILL mid-epoch and resumed ends with the same metrics, in the same MLflow run, as the run left alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from affectlab.lab.checkpoints import AtomicCheckpointIO, newest_intact, read_record, resolve_resume
from affectlab.lab.config import ConfigError, load_config
from affectlab.lab.raer.train import train as run
from affectlab.lab.resumable import ResumableDataLoader
from builders import ROOT, TINY_RUN, child_env, history, kill_when, only_run, start, step_reached

STEPS_PER_EPOCH = 4  # 30 training clips (40 minus the validation quarter) in batches of 8
RESUME_RUN = [*TINY_RUN, "trainer.max_epochs=3", "checkpoint_every.steps=1"]


def save(folder: Path, name: str, step: int) -> Path:
    path = folder / name
    AtomicCheckpointIO().save_checkpoint({"global_step": step, "epoch": 0, "weights": torch.arange(1000)}, path)
    return path


def test_checkpoint_is_written_atomically_with_its_record(tmp_path):
    path = save(tmp_path, "last.ckpt", 3)
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("the process dies here, in the middle of writing")

    with pytest.raises(RuntimeError, match="middle of writing"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 4, "bad": Unpicklable()}, path)
    assert path.read_bytes() == before  # the previous checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.ckpt.json"]  # no scratch file left
    record = read_record(path)
    assert record["bytes"] == len(before) and record["global_step"] == 3


@pytest.mark.parametrize("dies_at", [1, 2])
def test_a_checkpoint_and_its_record_stay_resumable_whichever_rename_the_process_dies_at(dies_at, tmp_path, monkeypatch):
    """A checkpoint is two files, the checkpoint and its record, each renamed into place: a process killed between
    the two renames leaves a checkpoint that resume=auto still takes (and loads), whichever of the two it is."""
    run_dir = tmp_path / "20260101-000000-1"
    path = save(run_dir, "last.ckpt", 3)
    renames = []
    real_replace = os.replace

    def replace(source, target):
        renames.append(Path(target).name)
        if len(renames) == dies_at:
            raise KeyboardInterrupt("the process dies here")  # not an error write_atomic handles
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save(run_dir, "last.ckpt", 7)
    monkeypatch.setattr(os, "replace", real_replace)
    assert newest_intact(tmp_path) == path, f"died at rename {dies_at} ({renames[-1]}): no checkpoint to resume"
    # the old one, and its record says so: the new one never took its place
    assert torch.load(path, weights_only=True)["global_step"] == 3 and read_record(path)["global_step"] == 3


def test_resume_auto_skips_a_damaged_checkpoint(tmp_path):
    run_dir = tmp_path / "20260101-000000-1"
    older = save(run_dir, "last.ckpt", 4)
    time.sleep(0.01)
    newer = save(run_dir, "step-latest.ckpt", 6)
    assert newest_intact(tmp_path) == newer
    with newer.open("r+b") as handle:  # a disk that lost the end of the file
        handle.truncate(newer.stat().st_size // 2)
    with pytest.warns(UserWarning, match=r"skipping the damaged checkpoint .*step-latest.ckpt: its size or SHA-256"):
        assert resolve_resume("auto", tmp_path) == str(older)
    with pytest.raises(ConfigError, match="cannot resume from it"):
        resolve_resume(str(newer), tmp_path)
    # a checkpoint without a record (written elsewhere) is accepted when it loads, skipped when it does not
    newer.with_name("step-latest.ckpt.json").unlink()
    with pytest.warns(UserWarning, match="it does not load"):
        assert newest_intact(tmp_path) == older


def test_loader_resumes_mid_epoch_with_the_same_batches_and_random_draws():
    """Lightning prefetches one batch: the state saved after training batch k must replay batch k+1 identically."""
    data = torch.arange(20)

    def draws(loader, count):
        return [(batch.tolist(), torch.rand(1).item()) for batch, _ in zip(loader, range(count))]

    torch.manual_seed(0)
    alone = ResumableDataLoader(data, batch_size=3, shuffle=True)
    expected = draws(alone, 7) + draws(alone, 7)  # two epochs

    torch.manual_seed(0)
    first = ResumableDataLoader(data, batch_size=3, shuffle=True)
    iterator = iter(first)
    seen = [(next(iterator).tolist(), torch.rand(1).item()) for _ in range(3)]
    next(iterator)  # Lightning's prefetch of batch 3, not trained
    first.trained = 3
    state = first.state_dict()

    torch.manual_seed(123)  # a fresh process: other generator states
    second = ResumableDataLoader(data, batch_size=3, shuffle=True)
    second.load_state_dict(state)
    rest = [(batch.tolist(), torch.rand(1).item()) for batch in second]
    assert seen + rest + draws(second, 7) == expected


def test_overfitting_one_batch_trains_on_the_same_batch_every_epoch():
    """Lightning turns shuffling off for `overfit_batches` when the loader's sampler says it shuffles."""
    import lightning as L

    seen = []

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            seen.append(batch.tolist())
            return (self.weight * batch.float()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    loader = ResumableDataLoader(torch.arange(20), batch_size=4, shuffle=True)
    trainer = L.Trainer(overfit_batches=1, max_epochs=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(Model(), train_dataloaders=loader)
    assert seen == [[0, 1, 2, 3]] * 3, seen


def raer_command(workdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(ROOT / "experiments" / "raer.py"), *RESUME_RUN,
        f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}", f"checkpoint_dir={workdir / 'ckpt'}", *extra,
    ]


@pytest.mark.slow  # real processes: two training runs started and one killed
def test_killed_mid_epoch_and_resumed_equals_the_run_left_alone(tmp_path, monkeypatch):
    killed_dir, alone_dir = tmp_path / "killed", tmp_path / "alone"
    killed_dir.mkdir()
    alone_dir.mkdir()
    started = time.monotonic()

    # the same run left alone (in this process, sharing nothing with the other two)
    monkeypatch.chdir(alone_dir)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri_alone = f"sqlite:///{alone_dir / 'mlflow.db'}"
    run(load_config("raer", [*RESUME_RUN, f"mlflow.tracking_uri={uri_alone}", f"checkpoint_dir={alone_dir / 'ckpt'}"],
                    environ={}))

    # kill -9 as soon as a checkpoint of the second epoch's first step is on disk
    process = start(raer_command(killed_dir), killed_dir)
    kill_when(process, step_reached(killed_dir / "ckpt", "*/step-latest.ckpt", STEPS_PER_EPOCH + 1))

    target = newest_intact(killed_dir / "ckpt")
    record = read_record(target)
    print(f"killed; resuming from {target.name} at step {record['global_step']} (epoch {record['epoch']})")
    assert target.name == "step-latest.ckpt" and record["global_step"] % STEPS_PER_EPOCH != 0, record  # mid-epoch
    client, before = only_run(f"sqlite:///{killed_dir / 'mlflow.db'}")
    assert before.info.status == "RUNNING" and record["mlflow_run_id"] == before.info.run_id

    done = subprocess.run(raer_command(killed_dir, "resume=auto"), cwd=killed_dir, env=child_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    print(f"three runs in {time.monotonic() - started:.1f} s")

    # (a) the same MLflow run continued and finished
    client, resumed = only_run(f"sqlite:///{killed_dir / 'mlflow.db'}")
    assert resumed.info.run_id == before.info.run_id and resumed.info.status == "FINISHED"
    # (b) the same metrics as the run left alone: every epoch's curve, and the test results of the best epoch
    alone_client, alone = only_run(uri_alone)
    for name in ("train/loss", "val/uar", "val/war", "val/f1_macro"):
        curve = history(client, resumed.info.run_id, name)
        assert len(curve) == 3 and curve == history(alone_client, alone.info.run_id, name), name
    tests = {k: v for k, v in alone.data.metrics.items() if k.startswith("test/")}
    assert len(tests) > 10
    assert {k: resumed.data.metrics.get(k) for k in tests} == tests


EPOCH_END_RUN = ["trainer.max_epochs=4", "checkpoint_every.steps=null", "checkpoint_every.minutes=null",
                 "optim.milestones=[2]"]  # no mid-epoch checkpoints; the rate drops after the second epoch


@pytest.fixture(scope="module")
def run_left_alone(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("alone")
    alone = subprocess.run(raer_command(folder, *EPOCH_END_RUN), cwd=folder, env=child_env(), capture_output=True,
                           text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr[-3000:]
    return folder


@pytest.mark.slow  # real processes: a run that dies and is resumed, against one left alone
@pytest.mark.parametrize("moment", ["after_validation", "after_last"])
def test_died_at_an_epoch_end_and_resumed_equals_the_run_left_alone(moment, run_left_alone, tmp_path):
    """The end of an epoch is not one moment: its validation writes the best checkpoint, then ``last.ckpt`` is written,
    then the epoch's training metrics are logged. A run that dies between them and is resumed with resume=auto
    continues from the epoch's end (or the one before) with the same batches and random draws, and logs each epoch's
    training loss once, as the run left alone does."""
    alone_client, alone = only_run(f"sqlite:///{run_left_alone / 'mlflow.db'}")
    uar = list(history(alone_client, alone.info.run_id, "val/uar").values())
    # the epoch to die in: a later epoch whose validation improved on every earlier one, so it wrote a best checkpoint
    epoch = next(e for e, value in enumerate(uar) if e > 0 and value > max(uar[:e]))

    crash = [sys.executable, str(ROOT / "tests" / "crash_at_epoch_end.py"), *raer_command(tmp_path, *EPOCH_END_RUN)[1:]]
    died = subprocess.run(crash, cwd=tmp_path, env={**child_env(), "CRASH_EPOCH": str(epoch), "CRASH_AT": moment},
                          capture_output=True, text=True, timeout=600)
    assert died.returncode == 9, died.stderr[-3000:]
    assert list(tmp_path.glob(f"ckpt/*/best-epoch={epoch:02d}.ckpt")), "the epoch's best checkpoint was not written"
    resumed = subprocess.run(raer_command(tmp_path, *EPOCH_END_RUN, "resume=auto"), cwd=tmp_path, env=child_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    client, run_ = only_run(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for name in ("train/loss", "val/uar", "val/f1_macro", "train/lr/temporal"):
        steps = [m.step for m in client.get_metric_history(run_.info.run_id, name)]
        # (died after validation, the epoch is trained and validated again: its validation figures, logged before,
        # are logged again at the same step with the same values)
        if name == "train/loss" or moment == "after_last":
            assert len(steps) == len(set(steps)), f"{name} logged twice at a step: {sorted(steps)}"
        assert history(client, run_.info.run_id, name) == history(alone_client, alone.info.run_id, name), name
    tests = {k: v for k, v in alone.data.metrics.items() if k.startswith("test/")}
    assert len(tests) > 10 and {k: run_.data.metrics.get(k) for k in tests} == tests
