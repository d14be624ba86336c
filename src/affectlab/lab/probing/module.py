"""The LightningModule of the probing experiment: the probes of every layer trained together (summed losses) and
each layer's accuracy, macro-F1 and confusion matrix on the test set."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from omegaconf import DictConfig
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from affectlab.datasets.emotion_corpus import EMOTIONS
from affectlab.probing import LayerProbes, probe_optimizer


class ProbeModule(L.LightningModule):
    """Trains the probes of every layer in one pass (summed losses) and reports each layer on the test set."""

    def __init__(self, probes: LayerProbes, layers: Sequence[int], optim: DictConfig, steps: int):
        super().__init__()
        self.probes, self.layers, self.optim_cfg, self.steps = probes, list(layers), optim, steps
        n = len(EMOTIONS)
        self.test_metrics = torch.nn.ModuleList(
            MetricCollection(
                {"accuracy": MulticlassAccuracy(n, average="micro"), "f1_macro": MulticlassF1Score(n, average="macro")}
            )
            for _ in self.layers
        )
        self.test_confusion = torch.nn.ModuleList(MulticlassConfusionMatrix(n) for _ in self.layers)
        self.test_logits: list[torch.Tensor] = []
        self.test_labels: list[torch.Tensor] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.probes.loss(batch["features"].transpose(0, 1), batch["label"])
        self.log("train/loss", loss / len(self.layers), on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def test_step(self, batch: dict, batch_idx: int) -> None:
        keep = batch["valid"]
        logits = self.probes(batch["features"][keep].transpose(0, 1))
        labels = batch["label"][keep]
        for position, layer_logits in enumerate(logits):
            self.test_metrics[position].update(layer_logits, labels)
            self.test_confusion[position].update(layer_logits, labels)
        self.test_logits.append(logits.detach().cpu())  # kept for the PCA figure only
        self.test_labels.append(labels.cpu())

    def on_test_epoch_end(self) -> None:
        self.results = []
        for position, layer in enumerate(self.layers):
            values = {name: float(v) for name, v in self.test_metrics[position].compute().items()}
            for name, value in values.items():
                # compute() already gathered every rank; averaging equal values keeps them (and Lightning quiet)
                self.log(f"test/{name}/layer_{layer:02d}", value, sync_dist=True)
            self.results.append({"layer": layer, **values, "confusion": self.test_confusion[position].compute()})
            self.test_metrics[position].reset()
            self.test_confusion[position].reset()

    def configure_optimizers(self):
        optimizer, scheduler = probe_optimizer(self.probes, self.steps, self.optim_cfg.lr, self.optim_cfg.warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
