"""The networks of the MELD experiment by approach (`NETS`) and the one LightningModule that trains any of them with
cross-entropy: ``text`` and ``transcript`` call ``net(their prompts)``, ``features`` calls ``net(features, present)``.

- text: the prompt of `affectlab.fusion.textualize` (transcript + textualized cues) into a transformers sequence
  classifier (`affectlab.models.text_classifier`), fine-tuned (or, with ``model.text.lora.enabled``, its LoRA
  adapters and head only: the way a causal LM such as Qwen3 is tuned).
- transcript: the same classifier on the transcript alone (the text-only ablation).
- features: the transcript's embedding by the same (frozen) text encoder, the visual and audio cue vectors, fused by
  `affectlab.models.attention_fusion.AttentionFusion` with missing modalities masked.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from affectlab.lab.config import ConfigError
from affectlab.lab.optim import create_optimizer, warmup_linear_decay
from affectlab.models.attention_fusion import AttentionFusion
from affectlab.models.text_classifier import create_text_classifier


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "f1_weighted": MulticlassF1Score(num_classes, average="weighted"),
            "f1_macro": MulticlassF1Score(num_classes, average="macro"),
            "accuracy": MulticlassAccuracy(num_classes, average="micro"),
        },
        prefix=prefix,
    )


class EmotionModule(L.LightningModule):
    """Trains any approach with cross-entropy: ``text`` and ``transcript`` call ``net(their prompts)``, ``features``
    calls ``net(features, present)``; all map a batch to logits [B, classes]. AdamW with a linear warm-up over
    ``warmup`` of the steps, then a linear decay to 0 (the usual schedule for fine-tuning a BERT-like encoder)."""

    def __init__(self, net: torch.nn.Module, approach: str, num_classes: int, lr: float, weight_decay: float,
                 warmup: float = 0.0):
        super().__init__()
        if not 0.0 <= float(warmup) < 1.0:
            raise ConfigError(f"optim.warmup={warmup!r}: expected the share of the training steps, in [0, 1)")
        self.net, self.approach, self.lr, self.weight_decay = net, approach, float(lr), float(weight_decay)
        self.warmup = float(warmup)
        self.val_metrics = _metrics(num_classes, "val/")
        self.test_metrics = _metrics(num_classes, "test/")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.confusion: np.ndarray | None = None

    def forward(self, batch: dict) -> torch.Tensor:
        if self.approach == "features":
            return self.net(batch["features"], batch["present"])
        return self.net(batch[self.approach])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch), batch["label"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(batch["label"]))
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
        self.test_confusion.update(preds, labels)
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        self.confusion = self.test_confusion.compute().cpu().numpy()  # a collective under DDP: every rank computes
        self.test_confusion.reset()

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = create_optimizer("adamw", params, lr=self.lr, weight_decay=self.weight_decay)
        # the steps counted from the data, not by estimated_stepping_batches: that loads a training loader of its own,
        # which took the resumed loader's place and broke a mid-epoch resume (different batches after it)
        data, world = self.trainer.datamodule, max(1, self.trainer.world_size)
        total = max(1, int(self.trainer.max_epochs) * -(-len(data.train_set) // (data.batch_size * world)))
        schedule = warmup_linear_decay(optimizer, total, self.warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def lora_options(cfg: DictConfig) -> dict | None:
    """``model.text.lora`` without its ``enabled`` switch, or None when LoRA is off."""
    lora = OmegaConf.to_container(cfg.model.text.lora) if cfg.model.text.lora else None
    if not lora or not lora.pop("enabled", True):
        return None
    return lora


def text_classifier(cfg: DictConfig, num_classes: int, feature_sizes: dict[str, int]) -> torch.nn.Module:
    """The transcript and text approaches: a transformers sequence classifier fine-tuned (or its LoRA adapters)."""
    text = cfg.model.text
    return create_text_classifier(
        text.name, num_classes, max_length=text.max_length,
        random_config=OmegaConf.to_container(text.random_config) if text.random_config else None,
        lora=lora_options(cfg), pooling=text.pooling,
    )


def feature_fusion(cfg: DictConfig, num_classes: int, feature_sizes: dict[str, int]) -> torch.nn.Module:
    """The features approach: the attention fusion of the feature vectors, missing modalities masked."""
    spec = cfg.model.features
    return AttentionFusion(dict(feature_sizes), num_classes, dim=spec.dim,
                           depth=spec.depth, heads=spec.heads, dropout=spec.dropout)


# The network of each approach (the `approaches` a config names).
NETS = {"transcript": text_classifier, "text": text_classifier, "features": feature_fusion}


def build_net(cfg: DictConfig, approach: str, num_classes: int, feature_sizes: dict[str, int]) -> torch.nn.Module:
    return NETS[approach](cfg, num_classes, feature_sizes)
