"""The RAER experiment's commands that train or read a model: `train` (the default), `evaluate` a checkpoint, write
the crop `cache`, `prepare` the boxes of your own clips. Each goes through the run spine (affectlab.lab.run)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from affectlab.lab.checkpoints import load_checkpoint, resolve_resume
from affectlab.lab.config import ConfigError
from affectlab.lab.raer.data import RaerDataModule, dataset_root
from affectlab.lab.raer.module import ClipCaerModule
from affectlab.lab.raer.nets import architecture, build_net
from affectlab.lab.run import Outcome, evaluate as evaluate_checkpoint, finish, train as train_run
from affectlab.lab.tracking import log_dataset


def build(cfg: DictConfig, record: dict | None = None) -> tuple[ClipCaerModule, RaerDataModule]:
    """The module and datamodule a config describes (the network from affectlab.lab.raer.nets); `record` gets what
    its checkpoints are a model of (experiment, classes, config, architecture)."""
    if cfg.data.root:
        dataset_root(cfg.data)  # a data.root that is not there: said before any weights are loaded or downloaded
    net, class_names, inputs = build_net(cfg)
    if record is not None:
        record.update(experiment="raer", classes=class_names, config=OmegaConf.to_container(cfg, resolve=True),
                      architecture=architecture(cfg, net, inputs))
    frozen = net.image_encoder if cfg.model.name == "clip_caer" and cfg.model.freeze_image_encoder else None
    datamodule = RaerDataModule(cfg.data, image_size=inputs.image_size, mean=inputs.mean, std=inputs.std,
                                seed=cfg.seed, frozen_encoder=frozen, streams=cfg.model.streams)
    module = ClipCaerModule(net, class_names, cfg.optim, cfg.model.streams, loss=cfg.model.loss,
                            label_smoothing=cfg.model.label_smoothing, cb_beta=cfg.model.cb_beta,
                            contexts=cfg.data.contexts)
    return module, datamodule


def artifacts(outcome: Outcome, scratch: Path) -> list[Path]:
    """The test figures and tables of a run: confusion matrix, per-context table, skipped clips (written in
    `scratch`)."""
    module, datamodule = outcome.module, outcome.datamodule
    paths = [p for p in (getattr(module, "confusion_png", None), getattr(module, "context_table", None)) if p]
    if datamodule.skipped:
        for split, messages in datamodule.skipped.items():
            outcome.logger.experiment.log_metric(outcome.logger.run_id, f"data/skipped/{split}", len(messages))
        lines = [f"{split}\t{message}" for split, messages in datamodule.skipped.items() for message in messages]
        if lines:
            skipped = scratch / "skipped_clips.txt"
            skipped.write_text("\n".join(lines) + "\n", encoding="utf-8")
            paths.append(skipped)
    return paths


def log_data(cfg: DictConfig, outcome: Outcome) -> None:
    """What the run read, on its MLflow page: each split's clips and where they came from (the synthetic set said)."""
    root = str(outcome.datamodule.root())
    source = root if cfg.data.root else f"embedded synthetic RAER (generated, {root})"
    for split in ("train", "val", "test"):
        dataset = getattr(outcome.datamodule, f"{split}_set", None)
        if dataset is not None:
            log_dataset(outcome.logger, f"RAER {split}", source, len(dataset), split, toy=not cfg.data.root)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train, select on validation UAR, test the best checkpoint once, log it as an MLflow model registered as
    affectlab-raer; returns the test metrics."""
    record: dict = {}
    outcome = train_run(cfg, lambda: build(cfg, record), monitor="val/uar", loader_workers=cfg.data.num_workers,
                        record=lambda: record)
    try:
        if outcome.is_main:
            log_data(cfg, outcome)
            with tempfile.TemporaryDirectory(prefix="affectlab-") as scratch:
                finish(cfg, outcome.logger, f"RAER test ({cfg.model.name}, {cfg.model.backbone})", outcome.metrics,
                       artifacts=artifacts(outcome, Path(scratch)), checkpoint=outcome.best_checkpoint)
            export(outcome, record)
    finally:
        if outcome.module.artifact_dir is not None:
            shutil.rmtree(outcome.module.artifact_dir, ignore_errors=True)  # the module's test figures, logged by now
    return outcome.metrics


def export(outcome: Outcome, record: dict) -> str | None:
    """The best checkpoint (or the last model) as an MLflow model registered as affectlab-raer."""
    from affectlab.lab.export import write_bundle
    from affectlab.lab.raer.predict import log_raer_model

    if outcome.best_checkpoint:
        state = load_checkpoint(outcome.best_checkpoint)["state_dict"]
    else:
        state = outcome.module.state_dict()
    weights = {k.removeprefix("net."): v.cpu() for k, v in state.items() if k.startswith("net.")}
    last = outcome.folder / "last.ckpt"
    checkpoint = outcome.best_checkpoint or (str(last) if last.is_file() else None)  # the model, if MLflow is away
    with tempfile.TemporaryDirectory(prefix="affectlab-bundle-") as folder:  # the whole network: not left in /tmp
        bundle = write_bundle(Path(folder), "raer", record["classes"], record["config"], {"weights": weights},
                              architecture=record["architecture"], checkpoint=checkpoint)
        return log_raer_model(outcome.logger, bundle)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """The validation and test metrics of the checkpoint ``resume`` names (a Lightning .ckpt of this experiment, or
    ``auto`` for the newest intact one under ``checkpoint_dir``), in a new MLflow run, on any number of processes:
    the same weights give the same metrics."""
    checkpoint = resolve_resume(cfg.resume, Path(cfg.checkpoint_dir))
    if checkpoint is None:
        raise ConfigError(f"evaluate needs resume=<checkpoint .ckpt> (or resume=auto with a checkpoint under "
                          f"checkpoint_dir={cfg.checkpoint_dir}); got resume={cfg.resume!r}")
    record: dict = {}
    outcome = evaluate_checkpoint(cfg, lambda: build(cfg, record), checkpoint, loader_workers=cfg.data.num_workers,
                                  record=lambda: record)
    try:
        if outcome.is_main:
            with tempfile.TemporaryDirectory(prefix="affectlab-") as scratch:
                finish(cfg, outcome.logger, f"RAER evaluation of {checkpoint}", outcome.metrics,
                       artifacts=artifacts(outcome, Path(scratch)))
    finally:
        if outcome.module.artifact_dir is not None:
            shutil.rmtree(outcome.module.artifact_dir, ignore_errors=True)
    return outcome.metrics


def write_cache(cfg: DictConfig) -> Path:
    """Write the face and context crops of every clip to the crop cache folder (read by training when complete)."""
    _, datamodule = build(cfg)
    folder = datamodule.write_cache()
    print(f"crop cache written to {folder}")
    return folder


def prepare(cfg: DictConfig) -> dict[str, int]:
    """Detect the faces of the clips under data.root (OpenCV) and write bounding_box/face.json and body.json."""
    from affectlab.datasets.prepare import prepare_boxes

    if not cfg.data.root:
        raise ConfigError("prepare needs data.root=<folder with images/> (your clips: frame folders or videos)")
    found = prepare_boxes(dataset_root(cfg.data))
    print(f"boxes written for {len(found)} clips; {sum(v == 0 for v in found.values())} without any face found")
    return found
