"""The LightningModule of the RAER experiment: any video classifier (affectlab.lab.raer.nets) trained with a loss of
affectlab.models.LOSSES and an optimiser of affectlab.lab.optim, evaluated by UAR, WAR and macro-F1, and on test also
per class, as a confusion matrix and per recording context."""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)

from affectlab.lab.optim import create_optimizer
from affectlab.lab.report import plot_confusion
from affectlab.models.losses import create_loss


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
    """Trains a video classifier (ClipCaer, FormerDfer) that maps ``{stream: [B, T, 3, H, W]}`` to class logits.

    loss: a name of affectlab.models.LOSSES: ``ce`` (cross-entropy on the majority label, the paper's), ``soft_ce``
    (on the annotators' vote shares) or ``cb_ls`` (class-balanced weights, Cui et al. 2019, with label smoothing
    ``label_smoothing``), built once the training split's class counts are known. contexts: the recording contexts
    (``data.contexts``) for per-context test UAR/WAR.
    """

    def __init__(self, net: torch.nn.Module, class_names: Sequence[str], optim: DictConfig, streams: Sequence[str],
                 *, loss: str = "ce", label_smoothing: float = 0.0, cb_beta: float = 0.999,
                 contexts: Sequence[str] | None = None):
        super().__init__()
        self.net = net
        self.class_names = list(class_names)
        self.optim_cfg = optim
        self.streams = tuple(streams)
        self.loss_name, self.label_smoothing, self.cb_beta = loss, float(label_smoothing), float(cb_beta)
        self.contexts = list(contexts or [])
        n = len(self.class_names)
        self.criterion: torch.nn.Module | None = None  # built in setup("fit"), from the training split's counts
        self.val_metrics = _metrics(n, "val/")
        self.test_metrics = _metrics(n, "test/")
        self.test_recall = MulticlassRecall(n, average=None)
        self.test_confusion = MulticlassConfusionMatrix(n)
        self.test_context_confusion = torch.nn.ModuleList(MulticlassConfusionMatrix(n) for _ in self.contexts)
        self.artifact_dir: Path | None = None  # made by the test's rank 0; train removes it once logged

    def setup(self, stage: str) -> None:
        if stage == "fit":  # the datamodule is set up first; every loss takes the same options (create_loss)
            labels = torch.as_tensor(self.trainer.datamodule.train_set.labels)
            counts = torch.bincount(labels, minlength=len(self.class_names)).tolist()
            self.criterion = create_loss(self.loss_name, class_counts=counts, beta=self.cb_beta,
                                         label_smoothing=self.label_smoothing).to(self.device)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(**{stream: batch[stream] for stream in self.streams})

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.criterion(logits, batch[self.criterion.target])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self(batch), batch)
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
        scenes = batch["scene"][batch["valid"]]
        for scene, confusion in enumerate(self.test_context_confusion):
            confusion.update(preds[scenes == scene], labels[scenes == scene])
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        recall = self.test_recall.compute()  # a collective under DDP: every rank computes
        matrix = self.test_confusion.compute().cpu().numpy()
        for name, value in zip(self.class_names, recall):
            self.log(f"test/recall/{name}", value, sync_dist=False)
        self.test_recall.reset()
        self.test_confusion.reset()
        self.context_rows = []
        for context, confusion in zip(self.contexts, self.test_context_confusion):
            counts = confusion.compute().double()  # synchronised across processes like every metric
            confusion.reset()
            clips = int(counts.sum())
            if clips == 0:
                continue  # a context without test clips has no UAR
            support = counts.sum(dim=1)
            # UAR: mean recall over the classes present in this context; WAR: accuracy over its clips.
            uar = float((counts.diagonal()[support > 0] / support[support > 0]).mean())
            war = float(counts.diagonal().sum() / clips)
            self.log(f"test/context/{context}/uar", uar, sync_dist=False)
            self.log(f"test/context/{context}/war", war, sync_dist=False)
            self.log(f"test/context/{context}/clips", float(clips), sync_dist=False)
            self.context_rows.append({"context": context, "clips": clips, "uar": uar, "war": war})
        if self.trainer.is_global_zero:
            self.artifact_dir = self.artifact_dir or Path(tempfile.mkdtemp(prefix="affectlab-"))
            self.confusion_png = plot_confusion(
                matrix, self.class_names, self.artifact_dir / "confusion_matrix.png", title="test"
            )
            if self.context_rows:
                self.context_table = self.artifact_dir / "test_by_context.csv"
                with self.context_table.open("w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=["context", "clips", "uar", "war"])
                    writer.writeheader()
                    writer.writerows(self.context_rows)

    def configure_optimizers(self):
        """SGD with the paper's per-part learning rates and a multi-step schedule (CLIP-CAER, Sec. 4.2)."""
        cfg = self.optim_cfg
        groups = [
            {"params": params, "lr": float(cfg.lr[name]), "name": name}
            for name, params in self.net.param_groups().items()
            if params
        ]
        optimizer = create_optimizer(cfg.name, groups, weight_decay=cfg.weight_decay, momentum=cfg.momentum)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
