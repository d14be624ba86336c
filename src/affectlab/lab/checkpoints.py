"""Checkpoints that survive a crash at any moment, and a resume that continues as if nothing had happened.

- `AtomicCheckpointIO`: every checkpoint Lightning writes (ModelCheckpoint, `Trainer.save_checkpoint`) goes to a
  scratch file, is fsynced and renamed over the target (`affectlab.datasets.integrity.write_atomic`), and gets a
  record beside it (``<name>.ckpt.json``: size, SHA-256, epoch, step, MLflow run id). A half-written file is never
  the latest; a damaged one is recognised by its record.
- `resolve_resume`: ``resume=auto`` takes the newest ``last.ckpt`` or ``step-latest.ckpt`` under the checkpoint root
  that is intact, warning about (and skipping) any damaged one.
- The training loaders are `affectlab.lab.resumable.ResumableDataLoader`s, which restart mid-epoch.
- `EpochEnd` (``last.ckpt`` after every epoch), `step_checkpoint` (``step-latest.ckpt``, every N steps or minutes) and
  `ResumeState` (the MLflow run id, the loaders' progress, and what an epoch's end leaves unsaved, in each
  checkpoint): the callbacks affectlab.lab.run gives every Trainer.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from datetime import timedelta
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig

from affectlab.datasets.integrity import file_record, matches, write_atomic
from affectlab.lab.config import ConfigError
from affectlab.lab.resumable import ResumableDataLoader, rng_state, set_rng_state

STEP_CHECKPOINT = "step-latest"  # the mid-epoch checkpoint's file name (replaced each time)
# What resume=auto continues from: the epoch-end and mid-epoch checkpoints. A best checkpoint is not one: it is written
# when its epoch's validation ends, before the epoch itself has ended (its training metrics logged, ``last.ckpt``
# written), and Lightning resumed from it would skip that end.
RESUME_POINTS = ("last.ckpt", f"{STEP_CHECKPOINT}.ckpt")


# --- writing and finding checkpoints ---------------------------------------------------------------------------------


def record_path(checkpoint: str | Path) -> Path:
    """Where the record of a checkpoint lives: ``<checkpoint>.json`` beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".json")


class UnsafeCheckpointError(ConfigError):
    """A checkpoint that holds more than tensors and plain values: unpickling it could run code, so it is refused."""


def load_checkpoint(path: str | Path, map_location="cpu", mmap: bool = False) -> dict:
    """A checkpoint read with torch.load(weights_only=True): tensors, numbers, texts and containers only, so that a
    crafted file cannot run code; one that needs more is an UnsafeCheckpointError naming what it holds."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        try:
            held = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # not a torch zip file at all: say what torch said
            held = []
        what = f"it holds {', '.join(held)}" if held else f"it cannot be read safely ({str(error).splitlines()[0]})"
        raise UnsafeCheckpointError(f"{path}: refused to load: {what}; a checkpoint is read with weights_only=True "
                                    "(tensors and plain values: nothing that could run code); expected a checkpoint "
                                    "this project wrote") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, written through a scratch file and a rename, with a size/SHA-256 record, and
    read back with `load_checkpoint` (weights_only)."""

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path, map_location=map_location or "cpu")

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        previous = _describing(path, _raw_record(path))

        def write(scratch: Path) -> None:
            torch.save(checkpoint, scratch)
            # The record goes into place before the checkpoint does, and also describes the file it replaces: a
            # process killed between the two renames leaves the old checkpoint, still intact by its record.
            record = file_record(scratch) | {
                "mtime_ns": scratch.stat().st_mtime_ns,  # kept by the rename: which entry describes the file there
                "epoch": checkpoint.get("epoch"),
                "global_step": checkpoint.get("global_step"),
                "mlflow_run_id": checkpoint.get("mlflow_run_id"),
                "previous": previous,
            }
            write_atomic(record_path(path), lambda target: target.write_text(json.dumps(record), encoding="utf-8"))

        write_atomic(path, write)

    def remove_checkpoint(self, path) -> None:
        super().remove_checkpoint(path)
        record_path(path).unlink(missing_ok=True)


def _raw_record(checkpoint: str | Path) -> dict | None:
    try:
        return json.loads(record_path(checkpoint).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _describing(path: Path, record: dict | None) -> dict | None:
    """The entry of `record` that describes the file at `path` now: the record itself, or the file it was to replace
    when the process died between the record's rename and the checkpoint's (told apart by size and modification
    time, which the rename keeps); without its own ``previous``. None when neither does."""
    try:
        status = path.stat()
    except OSError:
        return None
    for entry in (record or {}, (record or {}).get("previous") or {}):
        if entry.get("bytes") == status.st_size and entry.get("mtime_ns") == status.st_mtime_ns:
            return {key: value for key, value in entry.items() if key != "previous"}
    return None


def read_record(checkpoint: str | Path) -> dict | None:
    """The record written beside a checkpoint (the entry of it that describes the file there now), or None (a
    checkpoint from elsewhere)."""
    record = _raw_record(checkpoint)
    return _describing(Path(checkpoint), record) or record


def damage(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when it is intact.

    With a record: its size and SHA-256 must match. Without one: it must load (the file is mapped, not read).
    """
    record = read_record(checkpoint)
    if record is not None:
        return None if matches(checkpoint, record) else "its size or SHA-256 differs from its record"
    try:
        load_checkpoint(checkpoint, mmap=True)
    except UnsafeCheckpointError:
        raise
    except Exception as error:  # any failure to unpickle means the file cannot be resumed from
        return f"it does not load ({type(error).__name__}: {error})"
    return None


def newest_intact(checkpoint_root: Path) -> Path | None:
    """The most recently written intact resume point (`RESUME_POINTS`) in the run folders under `checkpoint_root`
    (damaged ones are skipped with a warning)."""
    candidates = [p for name in RESUME_POINTS for p in Path(checkpoint_root).glob(f"*/{name}") if p.is_file()]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime_ns, reverse=True):
        problem = damage(path)
        if problem is None:
            return path
        rank_zero_warn(f"resume=auto: skipping the damaged checkpoint {path}: {problem}")
    return None


def resolve_resume(resume: str | None, checkpoint_root: Path) -> str | None:
    """``resume``: a checkpoint path, ``auto`` (the newest intact checkpoint under the root; None when there is none)
    or null."""
    if not resume:
        return None
    if resume == "auto":
        found = newest_intact(checkpoint_root)
        return str(found) if found else None
    path = Path(resume)
    if not path.is_file():
        raise ConfigError(f"resume={resume!r}: no such checkpoint file")
    problem = damage(path)
    if problem:
        raise ConfigError(f"resume={resume!r}: cannot resume from it: {problem}")
    return resume


def checkpoint_run_id(checkpoint: str | Path | None) -> str | None:
    """The MLflow run a checkpoint belongs to (from its record, else from the checkpoint itself)."""
    if not checkpoint:
        return None
    record = read_record(checkpoint)
    if record is not None and "mlflow_run_id" in record:
        return record["mlflow_run_id"]
    return load_checkpoint(checkpoint, mmap=True).get("mlflow_run_id")


# --- callbacks -------------------------------------------------------------------------------------------------------


class ResumeState(Callback):
    """Keeps what a resume needs in every checkpoint: the MLflow run id, the progress of resumable loaders, and what
    Lightning checkpoints nothing of:

    - saved mid-epoch: the sums so far of the epoch-level metrics (``self.log(..., on_epoch=True)``), else the epoch's
      mean ``train/loss`` would cover only the batches after the resume;
    - saved at an epoch's end (``last.ckpt``): the random generators' states, which Lightning restores for no loader
      there (a resumed run would draw the next epoch's batches and augmentations from the seed again), and the
      epoch's training metrics, which Lightning logs only after the checkpoint is written: a run that dies in between
      and is resumed logs them then, unless the tracking store already has them."""

    def __init__(self):
        self._trainer = None
        self._partial: dict | None = None  # epoch sums of a mid-epoch checkpoint, added back after the first batch
        self._epoch_end: dict | None = None  # generators and unlogged metrics of an epoch-end checkpoint

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        loaders = trainer.train_dataloader
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            if isinstance(loader, ResumableDataLoader):
                loader.trained = batch_idx + 1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["mlflow_run_id"] = getattr(trainer.logger, "run_id", None)

    def state_dict(self) -> dict:
        trainer = self._trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        results = trainer.fit_loop.epoch_loop._results  # Lightning's own store of logged values
        if _epoch_over(trainer):
            # what Lightning logs once the epoch-end hooks are over, at the step it logs them at
            logged = {key: float(value) for key, value in results.metrics(False)["log"].items()}
            return {"epoch_end": {"rng": rng_state(), "metrics": logged,
                                  "step": trainer.fit_loop.epoch_loop._batches_that_stepped - 1}}
        if not trainer.training:
            return {}
        partial = {}
        for key, metric in results.items():
            if metric.meta.on_epoch and metric.is_tensor:
                partial[key] = {"value": metric.value.detach().cpu().clone(),
                                "batch_size": getattr(metric, "cumulated_batch_size", torch.tensor(0)).cpu().clone()}
        return {"partial_epoch": partial}

    def load_state_dict(self, state: dict) -> None:
        self._partial = state.get("partial_epoch") or None
        self._epoch_end = state.get("epoch_end")

    def on_train_start(self, trainer, pl_module) -> None:
        if not self._epoch_end:
            return
        saved, self._epoch_end = self._epoch_end, None
        if not trainer.fit_loop.restarting:  # (when it is, the loaders' own states were loaded and draw as saved)
            set_rng_state(saved["rng"])
            # Lightning made the first epoch's loader iterators already (drawing its batches from the seed's
            # generators, after the sanity check drew from them too): made again, they draw from the restored ones
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is not None:
                iter(fetcher)
        if saved["metrics"] and trainer.is_global_zero:
            for logger in trainer.loggers:
                missing = _not_logged(logger, saved["metrics"], saved["step"])
                if missing:
                    logger.log_metrics(missing, step=saved["step"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self._partial:
            return
        results = trainer.fit_loop.epoch_loop._results
        for key, saved in self._partial.items():
            metric = results.get(key)
            if metric is None:
                continue
            value = saved["value"].to(metric.value.device)
            if metric.meta.is_mean_reduction:  # value holds the batch-size-weighted sum
                metric.value = metric.value + value
                metric.cumulated_batch_size = metric.cumulated_batch_size + saved["batch_size"].to(value.device)
            elif metric.meta.is_sum_reduction:
                metric.value = metric.value + value
            elif metric.meta.is_max_reduction:
                metric.value = torch.maximum(metric.value, value)
            elif metric.meta.is_min_reduction:
                metric.value = torch.minimum(metric.value, value)
        self._partial = None


def _not_logged(logger, metrics: dict[str, float], step: int) -> dict[str, float]:
    """Those of `metrics` that the MLflow run of `logger` has no value of at `step` (all of them for another logger,
    or when the store cannot be asked)."""
    run_id = getattr(logger, "run_id", None)
    if run_id is None or not hasattr(logger, "experiment"):
        return dict(metrics)
    try:
        client = logger.experiment
        return {key: value for key, value in metrics.items()
                if all(m.step != step for m in client.get_metric_history(run_id, key))}
    except Exception:  # the store is away: log them (a value logged twice at a step is harmless, a lost one is not)
        return dict(metrics)


def _epoch_over(trainer) -> bool:
    """True once every training batch of the current epoch has run (a checkpoint then belongs to the epoch's end)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed >= trainer.num_training_batches


class _StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint for mid-epoch saves: none after an epoch's last batch, whose checkpoint is the epoch's own."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not _epoch_over(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def step_checkpoint(folder: Path, every: DictConfig | dict | None) -> ModelCheckpoint | None:
    """The mid-epoch checkpoint ``step-latest.ckpt`` in `folder`, replaced every ``every.steps`` training steps or,
    when steps is null, every ``every.minutes`` minutes of training; None when both are null."""
    steps = every.get("steps") if every else None
    minutes = every.get("minutes") if every else None
    if steps is None and minutes is None:
        return None
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"checkpoint_every.steps={steps!r}: expected a positive whole number of steps, or null")
    if steps is None and (not isinstance(minutes, (int, float)) or minutes <= 0):
        raise ConfigError(f"checkpoint_every.minutes={minutes!r}: expected a positive number of minutes, or null")
    return _StepCheckpoint(
        dirpath=folder,
        filename=STEP_CHECKPOINT,
        save_top_k=1,
        every_n_train_steps=steps,
        train_time_interval=None if steps is not None else timedelta(minutes=float(minutes)),
        enable_version_counter=False,
    )


class ModelRecord(Callback):
    """What a checkpoint is a model of, kept in it as ``checkpoint["affectlab"]``: the experiment, the classes, the
    resolved config and the architecture; a checkpoint resumed or evaluated under a config of another architecture is
    an error naming what differs (`check_checkpoint`: weights that fit another shape, or another activation, would
    otherwise fail with torch's traceback or run silently wrong)."""

    def __init__(self, record: dict):
        self.record = record

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["affectlab"] = self.record


def check_checkpoint(checkpoint: str | Path | None, record: dict | None) -> None:
    """An ArchitectureError naming what differs when `checkpoint` (to resume or evaluate) is a model of another
    architecture than `record` (the config's `ModelRecord`): checked before Lightning loads it, whose strict
    load_state_dict would otherwise stop at the first shape that differs with torch's size-mismatch traceback."""
    if checkpoint is None or record is None:
        return
    check_architecture(load_checkpoint(checkpoint, mmap=True).get("affectlab"), record.get("architecture", {}),
                       str(checkpoint))


def check_architecture(saved: dict | None, current: dict, what: str) -> None:
    """An ArchitectureError listing every key whose value differs between `saved` (a record) and `current`."""
    if saved is None:
        return  # a checkpoint from before records were kept: nothing to compare
    differs = [f"{key}: {saved['architecture'].get(key)!r} there, {value!r} here"
               for key, value in current.items() if saved.get("architecture", {}).get(key, value) != value]
    if differs:
        raise ArchitectureError(f"{what} is a model of another architecture than this config builds: "
                                + "; ".join(differs))


class ArchitectureError(ConfigError):
    """Weights of one architecture loaded into another."""


class EpochEnd(ModelCheckpoint):
    """``last.ckpt`` at the end of every training epoch, after its validation: what a resume continues from.
    (Lightning's own ``save_last`` writes it only in an epoch where a best checkpoint was saved, so a crash after the
    best epoch would resume from the best epoch, not the latest.)"""

    def __init__(self, folder: Path):
        super().__init__(dirpath=folder, save_top_k=0, save_last=True, enable_version_counter=False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer, pl_module) -> None:
        pass  # the epoch's end above, once validation has run


def new_run_folder(checkpoint_root: Path) -> Path:
    """A fresh checkpoint folder for a new run under the root (ModelCheckpoint broadcasts rank 0's to the others)."""
    return Path(checkpoint_root) / time.strftime(f"%Y%m%d-%H%M%S-{os.getpid()}")


def resume_point(resume: str | None, checkpoint_root: Path) -> tuple[str | None, str | None, Path]:
    """For ``resume`` (null, ``auto`` or a path): the checkpoint to continue (None: start afresh), its MLflow run id
    (None: a new run) and the folder the run's checkpoints go to (the checkpoint's own, else a new one)."""
    checkpoint = resolve_resume(resume, Path(checkpoint_root))
    folder = Path(checkpoint).parent if checkpoint else new_run_folder(checkpoint_root)
    return checkpoint, checkpoint_run_id(checkpoint), folder
