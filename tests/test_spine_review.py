"""What a review of the run spine (affectlab.lab: run, sweep, config, checkpoints, export, tracking) found, each
pinned down: a model logged while the tracking server is away, a resume under another architecture, a DDP sweep's
folder, progress lines, malformed overrides, temporary folders, the store's first write."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from affectlab.lab.checkpoints import ArchitectureError
from affectlab.lab.config import ConfigError, load_config
from affectlab.lab.export import log_model, write_bundle
from affectlab.lab.probing.data import BUNDLED_CORPUS
from affectlab.lab.resilient import OFFLINE_PREFIX, ResilientClient
from affectlab.lab.tracking import ResilientMLFlowLogger
from builders import TINY_CEXPR, TINY_RUN, free_port


def tiny(workdir: Path, *extra: str):
    return load_config("raer", [*TINY_RUN, f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
                                f"checkpoint_dir={workdir}/ckpt", *extra], environ={})


def log_tiny_model(logger, workdir: Path) -> str | None:
    bundle = write_bundle(workdir / "bundle", "raer", ["calm", "joy"], {}, {}, checkpoint="ckpt/run/best.ckpt")
    return log_model(logger, bundle, pd.DataFrame({"path": ["example.avi"]}), [("label", "string")],
                     [("path", "string", True)])


def test_a_model_is_not_registered_while_the_tracking_server_is_away(workdir: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused connection fails at once
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    # a sweep's child created during the outage has an offline id; its logger is built as make_logger builds it
    client = ResilientClient(MlflowClient(uri), retry_seconds=60, wait_at_end=0)
    with pytest.warns(UserWarning, match="unreachable"):
        child = client.create_run("0", run_name="child").info.run_id
    assert child.startswith(OFFLINE_PREFIX)
    offline = ResilientMLFlowLogger(experiment_name="x", tracking_uri=uri, run_id=child, wait_at_end=0)
    with pytest.warns(UserWarning, match=rf"raer model was not logged or registered in MLflow: its MLflow run {child} "
                                         r"was created while .* use model=ckpt/run/best.ckpt instead"):
        assert log_tiny_model(offline, workdir) is None
    # a run the server knows, the server gone when the model is logged
    away = ResilientMLFlowLogger(experiment_name="x", tracking_uri=uri, run_id="0" * 32, wait_at_end=0)
    with pytest.warns(UserWarning, match=r"not logged or registered in MLflow: the tracking server cannot be reached"):
        assert log_tiny_model(away, workdir) is None


def test_a_resume_under_another_shape_is_an_architecture_error_naming_the_key(workdir: Path):
    from affectlab.lab.raer.train import train

    train(tiny(workdir))
    checkpoint = next((workdir / "ckpt").rglob("last.ckpt"))
    # 4 learnable context vectors per class instead of 8: the prompt's weights have another shape
    with pytest.raises(ArchitectureError, match=rf"{checkpoint} is a model of another .* n_ctx: 8 there, 4 here"):
        train(tiny(workdir, f"resume={checkpoint}", "model.n_ctx=4"))


def test_a_fresh_sweep_never_reads_an_old_result_left_in_its_folder(workdir: Path):
    from affectlab.lab.sweep import RESULT, Sweep

    folder = workdir / "ckpt" / "20260101-ddp29500"
    (folder / "face-only").mkdir(parents=True)
    (folder / "face-only" / RESULT).write_text('{"test/uar": 0.99}', encoding="utf-8")  # an earlier launch's
    assert Sweep(tiny(workdir), folder, None, resumed=False).result("Face only") is None
    assert Sweep(tiny(workdir), folder, None, resumed=True).result("Face only") == {"test/uar": 0.99}


@pytest.mark.parametrize("rank_zero", [True, False])
def test_progress_lines_come_from_rank_zero_only(rank_zero: bool, capsys):
    import torch

    from affectlab.lab.run import LineProgress

    # what LineProgress reads of a Trainer, as rank 0 and as another process of a DDP run see it
    trainer = SimpleNamespace(is_global_zero=rank_zero, num_training_batches=20, current_epoch=0, max_epochs=1,
                              callback_metrics={"train/loss": torch.tensor(0.5)})
    progress = LineProgress()
    progress.on_train_epoch_start(trainer, None)
    for batch in range(20):
        progress.on_train_batch_end(trainer, None, None, None, batch)
    progress.on_train_epoch_end(trainer, None)
    lines = capsys.readouterr().out.splitlines()
    assert lines == (["epoch 1/1: batch 2/20", *(f"epoch 1/1: batch {b}/20" for b in range(4, 20, 2)),
                      "epoch 1/1 done: train/loss 0.5000"] if rank_zero else [])


def test_a_malformed_override_of_a_sweep_is_a_config_error(workdir: Path):
    from affectlab.lab.config import ConfigError, with_overrides

    with pytest.raises(ConfigError, match=r"^model.streams=\[face: cannot be parsed \(.*\) \(in the overrides of X\)$"):
        with_overrides(tiny(workdir), ["model.streams=[face"], "raer", "the overrides of X")


def test_compare_checks_every_methods_overrides_before_training_any(workdir: Path):
    from affectlab.lab.config import ConfigError
    from affectlab.lab.raer.compare import compare

    cfg = tiny(workdir, "compare.seeds=[0]")
    cfg.compare.methods["Typo"] = ["model.n_ctxx=4"]
    cfg.compare.methods["Unparsed"] = ["model.streams=[face"]
    cfg.compare.only = ["CLIP-CAER", "Typo", "Unparsed"]
    with pytest.raises(ConfigError, match=r"(?s)unknown key 'model.n_ctxx' in the overrides of compare.methods.Typo; "
                                          r"did you mean model.n_ctx\?.*model.streams=\[face: cannot be parsed"):
        compare(cfg)
    assert not (workdir / "ckpt").exists() and not (workdir / "mlflow.db").exists()  # nothing trained, nothing logged


def test_a_training_leaves_nothing_in_the_temporary_folder(workdir: Path, monkeypatch):
    import tempfile

    from affectlab.lab.raer.train import train

    scratch = workdir / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    train(tiny(workdir))  # its figures, config, bundle (the whole network's weights) and MLflow model logged
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_a_full_disk_while_making_a_new_store_is_one_line_and_leaves_no_scratch_file(workdir: Path, monkeypatch):
    import errno
    import shutil

    from affectlab.datasets.integrity import DiskFullError
    from affectlab.lab.tracking import prepare_store

    copy = shutil.copyfile

    def fills_the_disk(source, target):  # the new store's copy finds the disk full
        if Path(target).parent != workdir:
            return copy(source, target)
        Path(target).write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", fills_the_disk)
    with pytest.raises(DiskFullError, match=rf"disk full: writing {workdir / 'mlflow.db'} stopped"):
        prepare_store(f"sqlite:///{workdir / 'mlflow.db'}")
    assert sorted(p.name for p in workdir.iterdir()) == ["mlflow.db.lock"]


def test_an_unreachable_tracking_server_is_an_expected_error_of_the_command_line():
    from affectlab.lab.cli import expected
    from affectlab.lab.hardware import LaunchError
    from affectlab.lab.tracking import TrackingError  # defined in affectlab.lab.resilient

    assert expected(TrackingError("MLflow tracking server http://127.0.0.1:1 did not answer"))
    assert expected(LaunchError("--devices 3: this machine has 2 CPUs"))  # a ConfigError


TINY_BERT = ("model.text.random_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, "
             "intermediate_size: 64}")
SMALL_RUNS = {
    "meld": [TINY_BERT, "tasks=[meld]", "data.meld.dir=null", "approaches=[transcript]", "data.meld.train_size=40",
             "data.meld.dev_size=20", "trainer.max_epochs=1", "model.text.max_length=16", "data.batch_size=20"],
    "cexpr": [*TINY_CEXPR, "data.modalities=[audio,zero_shot_clip]", "visual.frames_per_window=4",
              "visual.modalities=[zero_shot_clip]"],
    "probing": ["data.source=files", f"data.train={BUNDLED_CORPUS}", "trainer.enable_progress_bar=false",
                "report.resamples=50", "num_threads=1"],
}


@pytest.mark.parametrize("experiment", sorted(SMALL_RUNS))
def test_the_other_experiments_leave_nothing_in_the_temporary_folder(experiment, workdir: Path, monkeypatch):
    import importlib
    import tempfile

    scratch = workdir / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    main = importlib.import_module(f"affectlab.lab.{experiment}").main
    main([*SMALL_RUNS[experiment], f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}"])
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_a_resume_path_that_is_not_there_is_said_before_the_model_is_built(workdir: Path):
    from affectlab.lab.run import train

    def build():
        raise AssertionError("the model was built before the resume point was checked")

    with pytest.raises(ConfigError, match="no-such.ckpt"):
        train(tiny(workdir, f"resume={workdir / 'no-such.ckpt'}"), build)


def test_a_sweep_resumed_from_a_compare_childs_checkpoint_path_finds_its_folder(workdir: Path):
    """raer compare keeps a child's checkpoints one level deeper than meld's and probing's trainings
    (<sweep>/<child>/<run>/x.ckpt): resume=PATH must still find the sweep's run.json."""
    import json

    from affectlab.lab.checkpoints import checkpoint_run_id
    from affectlab.lab.raer.train import train
    from affectlab.lab.sweep import RUN_RECORD, Sweep

    sweep_folder = workdir / "ckpt" / "20261206-000000-1"
    train(tiny(workdir, f"checkpoint_dir={sweep_folder / 'clip-caer-seed-0'}", "trainer.max_epochs=1"))
    (checkpoint,) = sweep_folder.rglob("last.ckpt")
    (sweep_folder / RUN_RECORD).write_text(json.dumps({"parent_run_id": checkpoint_run_id(checkpoint)}))
    sweep = Sweep.open(tiny(workdir, f"resume={checkpoint}"))
    assert sweep.folder == sweep_folder and sweep.resumed
