"""The run spine every experiment shares, read top to bottom:

    start           seed every generator, share the cores out (before anything random is built)
    resume point    resume=auto|PATH: the checkpoint to continue and its MLflow run, or a new run folder
    logger          the MLflow run (rank 0 only), its parameters
    build_trainer   the one Trainer of the project: devices, nodes, strategy and precision checked against the
                    machine (a precision it cannot run is an error, never a substitute), the best checkpoint by a
                    validation metric, last.ckpt at every epoch end, mid-epoch checkpoints, atomic writes
    fit, test       the best checkpoint (or the last model when nothing is selected)
    finish          the config, figures, tables and the best checkpoint as MLflow artifacts; a summary table

`train` does it all for an experiment that hands it a builder of (module, datamodule); `fit_and_test` is the middle
part, for the sweeps (affectlab.lab.sweep) that give each child its own logger and folder.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf

from affectlab.lab.checkpoints import (
    AtomicCheckpointIO,
    EpochEnd,
    ModelRecord,
    ResumeState,
    check_checkpoint,
    resume_point,
    step_checkpoint,
)
from affectlab.lab.config import flatten
from affectlab.lab.hardware import trainer_arguments
from affectlab.lab.report import print_summary
from affectlab.lab.threads import set_torch_threads
from affectlab.lab.tracking import ResilientMLFlowLogger, make_logger


class _Chatter(logging.Filter):
    """Lightning's lines repeated by every Trainer a sweep builds (33 in meld's default run) that say nothing of the
    run: which accelerators exist and an advertisement."""

    SAID = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.SAID)


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_Chatter())
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")  # Lightning's own


def start(cfg: DictConfig, loader_workers: int = 0) -> None:
    """Seed Python, NumPy and torch (and loader workers) from ``seed``; give torch its share of the cores."""
    L.seed_everything(cfg.seed, workers=True)
    set_torch_threads(cfg.get("num_threads"), loader_workers)


class LearningRates(Callback):
    """Each parameter group's learning rate at the start of every epoch, as ``train/lr/<group>``: named so that the
    run page lists the task's test metrics before these curves (MLflow sorts metrics by name)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.logger is None or not trainer.is_global_zero:
            return
        rates = {}
        for optimizer in trainer.optimizers:
            for position, group in enumerate(optimizer.param_groups):
                rates[f"train/lr/{group.get('name', f'group{position}')}"] = float(group["lr"])
        trainer.logger.log_metrics(rates, step=trainer.global_step)


class LineProgress(Callback):
    """Progress as plain lines, flushed, for output that is not a terminal (a log file, a batch job): the epoch, its
    batches and the logged metrics, every tenth of an epoch and at its end."""

    def __init__(self):
        self._every = 1

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        total = trainer.num_training_batches
        self._every = max(1, int(total / 10)) if isinstance(total, int) else 50

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not trainer.is_global_zero:  # one process speaks for the run
            return
        total = trainer.num_training_batches
        if (batch_idx + 1) % self._every == 0 and batch_idx + 1 < total:
            print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: batch {batch_idx + 1}/{total}", flush=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(shown.items()))
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} done: {metrics}", flush=True)


def build_trainer(trainer: Mapping, *, folder: Path | None, logger: ResilientMLFlowLogger | None = None,
                  every: DictConfig | dict | None = None, monitor: str | None = None,
                  mode: str = "max", record: dict | None = None) -> tuple[L.Trainer, ModelCheckpoint | None]:
    """The Trainer of every run, and the callback that keeps its best checkpoint by `monitor` (None: nothing is
    selected; the last model is the result).

    trainer: ``trainer.*`` of the config (or the keyword arguments of a run inside a run), checked by
    `affectlab.lab.hardware.trainer_arguments`. folder: where the checkpoints go (None: no checkpoints). record:
    what the checkpoints are a model of (`ModelRecord`: experiment, classes, config, architecture).
    """
    kwargs = trainer_arguments(OmegaConf.to_container(trainer, resolve=True) if isinstance(trainer, DictConfig)
                               else dict(trainer))
    plugins = kwargs.pop("plugins", [])
    callbacks: list[Callback] = [ModelRecord(record)] if record is not None else []
    best = None
    if folder is not None:
        if monitor is not None:
            best = ModelCheckpoint(dirpath=folder, filename="best-{epoch:02d}", monitor=monitor, mode=mode)
            callbacks.append(best)
        callbacks += [EpochEnd(folder), ResumeState()]
        step = step_checkpoint(folder, every)
        if step is not None:
            callbacks.append(step)
    else:
        kwargs.setdefault("enable_checkpointing", False)
    if logger is not None:
        callbacks.append(LearningRates())
    if kwargs.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar() if sys.stdout.isatty() else LineProgress())
        kwargs["enable_progress_bar"] = sys.stdout.isatty()
    built = L.Trainer(
        **kwargs,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        plugins=[*plugins, AtomicCheckpointIO()],  # a checkpoint is complete or absent, never half-written
        use_distributed_sampler=False,  # the datamodules shard themselves, without counting padding twice
    )
    return built, best


def fit_and_test(trainer: L.Trainer, best: ModelCheckpoint | None, module: L.LightningModule,
                 datamodule: L.LightningDataModule, resume: str | None = None,
                 test: bool = True) -> tuple[dict[str, float], str | None]:
    """Fit (continuing the checkpoint `resume`), then test the best checkpoint, or the last model when nothing is
    selected; returns the test metrics and the best checkpoint's path."""
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    chosen = (best.best_model_path or None) if best is not None else None
    if not test:
        return {}, chosen
    results = trainer.test(module, datamodule=datamodule, ckpt_path=chosen, verbose=False)  # None: the last model
    return ({k: float(v) for k, v in results[0].items()} if results else {}), chosen


@dataclass
class Outcome:
    """What `train` did: the test metrics, the MLflow logger (None off rank 0), the best checkpoint."""

    metrics: dict[str, float]
    logger: ResilientMLFlowLogger | None
    trainer: L.Trainer
    module: L.LightningModule
    datamodule: L.LightningDataModule
    best_checkpoint: str | None
    folder: Path

    @property
    def is_main(self) -> bool:
        return self.trainer.is_global_zero


def train(cfg: DictConfig, build: Callable[[], tuple[L.LightningModule, L.LightningDataModule]], *,
          monitor: str | None = None, mode: str = "max", loader_workers: int = 0,
          params: Mapping[str, object] | None = None, record: Callable[[], dict] | None = None) -> Outcome:
    """Seed, build (module, datamodule), resume or start the run folder and its MLflow run, fit and test; `record()`
    (called after build) is what the checkpoints are a model of (`ModelRecord`)."""
    start(cfg, loader_workers)
    resume, run_id, folder = resume_point(cfg.resume, Path(cfg.checkpoint_dir))  # a wrong resume= before any weights
    module, datamodule = build()
    check_checkpoint(resume, record() if record else None)  # before the MLflow run is opened
    logger = make_logger(cfg, run_id=run_id)
    trainer, best = build_trainer(cfg.trainer, folder=folder, logger=logger, every=cfg.checkpoint_every,
                                  monitor=monitor, mode=mode, record=record() if record else None)
    if trainer.is_global_zero and not run_id:
        logger.log_hyperparams({**flatten(cfg), **(params or {})})
    metrics, chosen = fit_and_test(trainer, best, module, datamodule, resume)
    return Outcome(metrics, logger if trainer.is_global_zero else None, trainer, module, datamodule, chosen, folder)


def evaluate(cfg: DictConfig, build: Callable[[], tuple[L.LightningModule, L.LightningDataModule]],
             checkpoint: str, loader_workers: int = 0, record: Callable[[], dict] | None = None) -> Outcome:
    """The validation and test metrics of a checkpoint, without training, in a new MLflow run."""
    start(cfg, loader_workers)
    module, datamodule = build()
    check_checkpoint(checkpoint, record() if record else None)
    logger = make_logger(cfg)
    trainer, _ = build_trainer(cfg.trainer, folder=None, logger=logger)
    if trainer.is_global_zero:
        logger.log_hyperparams({**flatten(cfg), "evaluated_checkpoint": checkpoint})
    metrics: dict[str, float] = {}
    for results in (trainer.validate(module, datamodule=datamodule, ckpt_path=checkpoint, verbose=False),
                    trainer.test(module, datamodule=datamodule, ckpt_path=checkpoint, verbose=False)):
        metrics.update({k: float(v) for k, v in results[0].items()})
    return Outcome(metrics, logger if trainer.is_global_zero else None, trainer, module, datamodule, None,
                   Path(checkpoint).parent)


def finish(cfg: DictConfig, logger: ResilientMLFlowLogger | None, title: str, summary: Mapping[str, float], *,
           artifacts: Sequence[Path] = (), metrics: Mapping[str, float] | None = None,
           checkpoint: str | None = None) -> None:
    """On rank 0 (`logger` set): log the config, `artifacts`, `metrics` (those Lightning did not log) and the best
    `checkpoint` to the run; print the `summary` table."""
    if logger is None:
        return
    client, run_id = logger.experiment, logger.run_id
    with tempfile.TemporaryDirectory(prefix="affectlab-") as scratch:  # (an unsent artifact is copied to the spool)
        config_file = Path(scratch) / "config.yaml"
        OmegaConf.save(cfg, config_file)
        for path in (config_file, *artifacts):
            client.log_artifact(run_id, str(path))
    for name, value in (metrics or {}).items():
        client.log_metric(run_id, name, float(value))
    if checkpoint:
        client.log_artifact(run_id, checkpoint, artifact_path="checkpoints")
    client.set_tag(run_id, "mlflow.note.content", run_note(title, summary, [Path(p).name for p in artifacts], run_id))
    print_summary(summary, title=f"{title} (MLflow run {run_id})")


def run_note(title: str, summary: Mapping[str, float], artifacts: Sequence[str], run_id: str) -> str:
    """The run's description on its MLflow page (markdown): the headline metrics first, then its figures shown and its
    tables linked, so that the page opens on what the run found."""
    lines = [f"**{title}**", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {float(value):.4f} |" for name, value in list(summary.items())[:12]]
    figures = [name for name in artifacts if name.endswith(".png")]
    tables = [name for name in artifacts if name.endswith((".csv", ".json", ".txt"))]
    for name in figures:
        lines += ["", f"![{name}](get-artifact?path={name}&run_uuid={run_id})"]
    if tables:
        lines += ["", "Tables (Artifacts tab): " + ", ".join(f"[{name}](get-artifact?path={name}&run_uuid={run_id})"
                                                           for name in tables)]
    return "\n".join(lines)
