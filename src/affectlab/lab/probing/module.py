"""The LightningModule of the MLP probes: every layer's probe trained together (summed losses, AdamW), scored on the
whole validation split after every epoch; each layer keeps the weights of its best epoch, and training stops once no
layer has improved for ``patience`` epochs.

The same rule as `affectlab.probing.train_probes` for the MLP, run by the project's Trainer so that its checkpoints
(every epoch end, and mid-epoch) hold the best weights, scores and epochs too: a run killed at any epoch, before or
after the best one, resumes from its newest checkpoint and ends as the run left alone. (The linear probe's full-batch
L-BFGS does not fit a loop of batches: `train_probes` trains it, in seconds.)
"""

from __future__ import annotations

import lightning as L
import torch

from affectlab.probing import LayerProbes, ProbeTraining, layer_losses
from affectlab.probing.training import keep_improved, restore_best, validation_scores


class MlpProbes(L.LightningModule):
    """``probes`` (standardised on the training features already) trained on batches of ``{"features": [B, L, H],
    "label"}``; ``val_features [L, N, H]`` and ``val_labels`` score them after every epoch."""

    def __init__(self, probes: LayerProbes, val_features: torch.Tensor, val_labels: torch.Tensor, *, lr: float,
                 weight_decay: float, monitor: str, patience: int, layers: list[int]):
        super().__init__()
        self.probes, self.layers = probes, list(layers)
        self.val_features, self.val_labels = val_features, val_labels  # data, not state: not in the checkpoints
        self.lr, self.weight_decay, self.monitor, self.patience = lr, weight_decay, monitor, patience
        count = len(self.layers)
        for name, parameter in probes.named_parameters():
            self.register_buffer(f"best_{name}", parameter.detach().clone())
        self.register_buffer("best_score", torch.full((count,), -torch.inf))
        self.register_buffer("best_epoch", torch.zeros(count, dtype=torch.long))
        self.register_buffer("epochs_run", torch.zeros((), dtype=torch.long))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = layer_losses(self.probes(batch["features"].transpose(0, 1)), batch["label"])
        self.log("train/loss", losses.mean(), on_step=True, on_epoch=True, prog_bar=True)
        return losses.sum()  # the layers share no parameter: each probe gets its own gradient

    def stopped(self) -> bool:
        """No layer improved in the last ``patience`` epochs."""
        return int(self.epochs_run) - int(self.best_epoch.max()) >= self.patience

    def on_train_start(self) -> None:
        if int(self.epochs_run) > 0 and self.stopped():  # resumed from the checkpoint of the epoch that stopped it
            self.trainer.should_stop = True

    def on_train_epoch_end(self) -> None:
        """Score every layer on the validation split, keep the improved layers' weights, stop when none improves."""
        with torch.no_grad():
            logits = self.probes(self.val_features.to(self.device))
            scores = validation_scores(logits, self.val_labels.to(self.device), self.monitor).to(self.device)
        epoch = self.current_epoch + 1
        improved = keep_improved(self.probes, self._best_weights(), self.best_score, scores)
        self.best_epoch[improved] = epoch
        self.epochs_run.fill_(epoch)
        shown = -scores if self.monitor == "loss" else scores
        if self.logger is not None:
            self.logger.log_metrics({f"val/{self.monitor}/layer_{layer:02d}": float(value)
                                     for layer, value in zip(self.layers, shown)}, step=epoch)
        self.log("val/layers_improved", improved.sum().float())
        if self.stopped():
            self.trainer.should_stop = True

    def _best_weights(self) -> dict[str, torch.Tensor]:
        """Parameter name -> the buffer of its best values (checkpointed with the module)."""
        return {name: getattr(self, f"best_{name}") for name, _ in self.probes.named_parameters()}

    def restore_best(self) -> None:
        """Every layer's probe takes the weights of its best epoch."""
        restore_best(self.probes, self._best_weights())
        self.probes.eval()

    def training_record(self, max_epochs: int) -> ProbeTraining:
        """What training did, as `train_probes` reports it."""
        return ProbeTraining("adamw", self.monitor, int(self.epochs_run), self.best_epoch.tolist(),
                             [self.weight_decay] * len(self.layers), self.best_score.tolist(), [],
                             int(self.epochs_run) < max_epochs)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.probes.parameters(), lr=self.lr, weight_decay=self.weight_decay)
