"""CLIP-CAER on RAER: the LightningDataModule, the LightningModule and the run, composed from affectlab's packages.

Reads top to bottom: data → model → training → test with the best checkpoint → MLflow artifacts.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, DistributedSampler
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)

from affectlab.datasets import (
    RaerDataset,
    ensure_synthetic_raer,
    load_label_set,
    load_raer_split,
    stratified_split,
)
from affectlab.lab.config import ConfigError, flatten, load_config
from affectlab.lab.report import plot_confusion, print_summary
from affectlab.lab.sharding import EvalShardSampler, MarkPadding
from affectlab.lab.tracking import make_logger
from affectlab.models import ClipCaer, create_clip

STREAMS = ("face", "context")


class RaerDataModule(L.LightningDataModule):
    """RAER in its official layout (``data.root``), or the embedded synthetic set when no root is given."""

    def __init__(self, data: DictConfig, *, image_size: int, mean, std, seed: int = 0):
        super().__init__()
        self.cfg = data
        self.image_size, self.mean, self.std, self.seed = image_size, tuple(mean), tuple(std), seed

    def root(self) -> Path:
        if self.cfg.root:
            root = Path(self.cfg.root).expanduser()
            if not root.is_dir():
                raise ConfigError(f"data.root={self.cfg.root!r} is not a folder (expected RAER's release layout)")
            return root
        return ensure_synthetic_raer(**OmegaConf.to_container(self.cfg.synthetic))

    def prepare_data(self) -> None:
        self.root()  # builds the synthetic set once, on the first process of each node

    def setup(self, stage: str | None = None) -> None:
        root = self.root()
        common = dict(
            root=root,
            num_segments=self.cfg.num_segments,
            image_size=self.image_size,
            face_margin=self.cfg.face_margin,
            mean=self.mean,
            std=self.std,
        )
        train_clips, val_clips = stratified_split(
            load_raer_split(root, "train"), self.cfg.val_fraction, seed=self.seed
        )
        if stage in ("fit", "validate", None):
            if not val_clips:
                raise ConfigError("data.val_fraction must leave at least one validation clip per class")
            self.train_set = RaerDataset(clips=train_clips, train=True, seed=self.seed, **common)
            self.val_set = RaerDataset(clips=val_clips, train=False, **common)
        if stage in ("test", None):
            self.test_set = RaerDataset(clips=load_raer_split(root, "test"), train=False, **common)

    def _loader(self, dataset, sampler, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            shuffle=shuffle if sampler is None else None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=drop_last,
        )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._world()
        if world > 1:
            sampler = DistributedSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
            return self._loader(self.train_set, sampler)
        return self._loader(self.train_set, None, shuffle=True)

    def _eval_loader(self, dataset) -> DataLoader:
        rank, world = self._world()
        return self._loader(MarkPadding(dataset), EvalShardSampler(len(dataset), rank, world))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set)


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "uar": MulticlassRecall(num_classes, average="macro"),  # unweighted average recall
            "war": MulticlassAccuracy(num_classes, average="micro"),  # weighted average recall = accuracy
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class ClipCaerModule(L.LightningModule):
    """Trains a video classifier that maps ``{stream: [B, T, 3, H, W]}`` to class logits."""

    def __init__(self, net: ClipCaer, class_names: Sequence[str], optim: DictConfig, streams: Sequence[str]):
        super().__init__()
        self.net = net
        self.class_names = list(class_names)
        self.optim_cfg = optim
        self.streams = tuple(streams)
        n = len(self.class_names)
        self.val_metrics = _metrics(n, "val/")
        self.test_metrics = _metrics(n, "test/")
        self.test_recall = MulticlassRecall(n, average=None)
        self.test_confusion = MulticlassConfusionMatrix(n)
        self.mlflow_run_id: str | None = None
        self.artifact_dir = Path(tempfile.mkdtemp(prefix="affectlab-"))

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(**{stream: batch[stream] for stream in self.streams})

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch), batch["label"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def _evaluate(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        keep = batch["valid"]
        return self(batch).argmax(dim=-1)[keep], batch["label"][keep]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_metrics.update(*self._evaluate(batch))
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        preds, labels = self._evaluate(batch)
        self.test_metrics.update(preds, labels)
        self.test_recall.update(preds, labels)
        self.test_confusion.update(preds, labels)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        recall = self.test_recall.compute()  # a collective under DDP: every rank computes
        matrix = self.test_confusion.compute().cpu().numpy()
        for name, value in zip(self.class_names, recall):
            self.log(f"test/recall/{name}", value, sync_dist=False)
        self.test_recall.reset()
        self.test_confusion.reset()
        if self.trainer.is_global_zero:
            self.confusion_png = plot_confusion(
                matrix, self.class_names, self.artifact_dir / "confusion_matrix.png", title="test"
            )

    def configure_optimizers(self):
        """SGD with the paper's per-part learning rates and a multi-step schedule (CLIP-CAER, Sec. 4.2)."""
        cfg = self.optim_cfg
        groups = [
            {"params": params, "lr": float(cfg.lr[name]), "name": name}
            for name, params in self.net.param_groups().items()
            if params
        ]
        if cfg.name == "sgd":
            optimizer = torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        elif cfg.name == "adamw":
            optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        else:
            raise ConfigError(f"optim.name={cfg.name!r}: expected 'sgd' or 'adamw'")
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # so that a resumed run continues into the same MLflow run
        checkpoint["mlflow_run_id"] = getattr(self.logger, "run_id", None)


def build_net(cfg: DictConfig) -> tuple[ClipCaer, list[str], object]:
    """The CLIP-CAER network a config describes, its class names, and the CLIP preprocessing it expects."""
    label_set = load_label_set(cfg.data.label_set)
    streams = tuple(cfg.model.streams)
    unknown = [s for s in streams if s not in STREAMS]
    if unknown or not streams:
        raise ConfigError(f"model.streams={list(streams)}: expected a non-empty subset of {list(STREAMS)}")
    if cfg.model.text not in ("descriptors", "class_names"):
        raise ConfigError(f"model.text={cfg.model.text!r}: expected 'descriptors' or 'class_names'")
    texts = label_set.descriptors if cfg.model.text == "descriptors" else label_set.classes
    clip = create_clip(cfg.model.backbone, cfg.model.pretrained, quick_gelu=cfg.model.quick_gelu)
    net = ClipCaer(
        clip.model,
        clip.tokenizer,
        list(texts),
        num_frames=cfg.data.num_segments,
        streams=streams,
        n_ctx=cfg.model.n_ctx,
        learnable_ctx=cfg.model.learnable_ctx,
        temporal_depth=cfg.model.temporal_depth,
        temporal_heads=cfg.model.temporal_heads,
        logit_scale=cfg.model.logit_scale,
        freeze_image_encoder=cfg.model.freeze_image_encoder,
    )
    return net, list(label_set.classes), clip


def resolve_resume(resume: str | None, checkpoint_root: Path) -> str | None:
    """``resume``: a checkpoint path, ``auto`` (the newest ``last.ckpt`` under the checkpoint root) or null."""
    if not resume:
        return None
    if resume == "auto":
        candidates = sorted(checkpoint_root.glob("*/last.ckpt"), key=lambda p: p.stat().st_mtime)
        return str(candidates[-1]) if candidates else None
    if not Path(resume).is_file():
        raise ConfigError(f"resume={resume!r}: no such checkpoint file")
    return resume


def run(cfg: DictConfig) -> dict[str, float]:
    """Train, select on validation, test the best checkpoint once; returns the test metrics."""
    L.seed_everything(cfg.seed, workers=True)
    net, class_names, clip = build_net(cfg)
    datamodule = RaerDataModule(cfg.data, image_size=clip.image_size, mean=clip.mean, std=clip.std, seed=cfg.seed)
    module = ClipCaerModule(net, class_names, cfg.optim, cfg.model.streams)

    checkpoint_root = Path(cfg.checkpoint_dir)
    resume = resolve_resume(cfg.resume, checkpoint_root)
    run_id = torch.load(resume, map_location="cpu", weights_only=False).get("mlflow_run_id") if resume else None
    logger = make_logger(cfg, run_id=run_id)
    # the folder is broadcast from rank 0 by ModelCheckpoint, so every process agrees on it
    checkpoints = ModelCheckpoint(
        dirpath=Path(resume).parent if resume else checkpoint_root / time.strftime(f"%Y%m%d-%H%M%S-{os.getpid()}"),
        filename="best-{epoch:02d}",
        monitor="val/uar",
        mode="max",
        save_last=True,
    )
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    callbacks = [checkpoints]
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if trainer_kwargs.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar())
    trainer = L.Trainer(
        **trainer_kwargs,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        use_distributed_sampler=False,  # the datamodule shards itself, without counting padding twice
    )
    if trainer.is_global_zero and not run_id:
        logger.log_hyperparams(flatten(cfg))
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    best = checkpoints.best_model_path or None
    results = trainer.test(module, datamodule=datamodule, ckpt_path="best" if best else None, verbose=False)
    metrics = {k: float(v) for k, v in results[0].items()} if results else {}
    if trainer.is_global_zero:
        config_file = module.artifact_dir / "config.yaml"
        OmegaConf.save(cfg, config_file)
        experiment = logger.experiment
        experiment.log_artifact(logger.run_id, str(config_file))
        if getattr(module, "confusion_png", None):
            experiment.log_artifact(logger.run_id, str(module.confusion_png))
        if best:
            experiment.log_artifact(logger.run_id, best, artifact_path="checkpoints")
        print_summary(metrics, title=f"RAER test ({cfg.model.backbone}, MLflow run {logger.run_id})")
    return metrics


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    import sys

    cfg = load_config("raer", sys.argv[1:] if argv is None else argv)
    return run(cfg)
