"""MHPF trained on the basic-expression windows: one net per modality subset side by side (the ablation), each
early-stopped on its own mean of UAR, WAR, macro- and weighted F1 (9th ABAW); MHPF's loss and initialisation are
named in the config (fusion.loss, fusion.init). Checkpointed atomically; resume=auto continues it into its MLflow run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, RandomSampler, TensorDataset
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from affectlab.fusion import MhpfBank, class_weights, fused_probabilities, mhpf_loss
from affectlab.lab.cexpr.data import BASIC_EMOTIONS, NUM_BASIC, Segments, split_indices
from affectlab.lab.resumable import ResumableDataLoader
from affectlab.lab.run import build_trainer


class FusionDataModule(L.LightningDataModule):
    """Basic-expression windows with at least one modality, as tensors (probs with NaN zeroed, presence, label),
    split once into train/val. An epoch is `data.train_samples_per_epoch` windows (whole shuffled passes, the last
    one cut; null: one pass), so that a small data set still gives Adam at 1e-4 enough steps between validations."""

    def __init__(self, segments: Segments, labels: np.ndarray, data: DictConfig, seed: int):
        super().__init__()
        self.cfg = data
        train, val = split_indices(len(labels), data.val_fraction, seed)
        train, val = train[segments.present[train].any(axis=1)], val[segments.present[val].any(axis=1)]
        probs = torch.as_tensor(np.nan_to_num(segments.probs, nan=0.0), dtype=torch.float32)
        present = torch.as_tensor(segments.present)
        target = torch.as_tensor(labels, dtype=torch.long)
        self.val_set = TensorDataset(*(t[val] for t in (probs, present, target)))
        self.train_set = TensorDataset(*(t[train] for t in (probs, present, target)))
        self.train_labels, self.train_present = target[train], present[train]

    def train_dataloader(self) -> DataLoader:
        cfg = self.cfg
        sampler = RandomSampler(self.train_set, num_samples=cfg.train_samples_per_epoch)
        return ResumableDataLoader(self.train_set, batch_size=cfg.batch_size, sampler=sampler,  # resumes mid-epoch
                                   num_workers=cfg.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers)


def _val_metrics() -> MetricCollection:
    return MetricCollection({
        "uar": MulticlassRecall(NUM_BASIC, average="macro"),
        "war": MulticlassAccuracy(NUM_BASIC, average="micro"),
        "f1_macro": MulticlassF1Score(NUM_BASIC, average="macro"),
        "f1_weighted": MulticlassF1Score(NUM_BASIC, average="weighted"),
    })


class MhpfModule(L.LightningModule):
    """Trains a bank of MHPFs (one per modality subset; the last is all modalities) with class-weighted
    cross-entropy, each early-stopped on its own mean of UAR, WAR, macro- and weighted F1 (9th ABAW): a net's best
    epoch is kept, and training ends once every net has gone `patience` epochs without a better score."""

    def __init__(self, bank: MhpfBank, weights: torch.Tensor, lr: float, patience: int,
                 loss: str = "authors_ce"):
        super().__init__()
        self.bank, self.lr, self.patience, self.loss_kind = bank, lr, patience, loss
        self.register_buffer("class_weights", weights)  # [K, 8]
        self.val_metrics = torch.nn.ModuleList([_val_metrics() for _ in range(len(bank.subsets))])
        self.best_scores = [float("-inf")] * len(bank.subsets)
        self.best_states = [bank.state_of(k) for k in range(len(bank.subsets))]
        self.waits = [0] * len(bank.subsets)
        self.seen = [False] * len(bank.subsets)  # whether net k had a validation window this epoch

    def forward(self, probs: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bank(probs, present)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        probs, present, target = batch
        fused, valid = self(probs, present)
        loss = mhpf_loss(fused, target, self.class_weights, valid, kind=self.loss_kind)  # every net's own, summed
        self.log("train/loss", loss / len(fused), on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        probs, present, target = batch
        fused, valid = self(probs, present)
        for k, (metrics, scores, rows) in enumerate(zip(self.val_metrics, fused, valid)):
            if rows.any():
                metrics.update(scores[rows].argmax(dim=-1), target[rows])
                self.seen[k] = True

    def on_validation_epoch_end(self) -> None:
        scores = []
        for k, metrics in enumerate(self.val_metrics):
            values = metrics.compute() if self.seen[k] else {}
            metrics.reset()
            self.seen[k] = False
            scores.append(float(torch.stack(list(values.values())).mean()) if values else float("nan"))
            if k == len(self.val_metrics) - 1 and values:  # all modalities: the fusion the run reports
                self.log_dict({f"val/{name}": value for name, value in values.items()})
        self.log("val/score", scores[-1], prog_bar=True)
        if self.trainer.sanity_checking:
            return
        for k, score in enumerate(scores):
            if score > self.best_scores[k]:
                self.best_scores[k], self.best_states[k], self.waits[k] = score, self.bank.state_of(k), 0
            else:
                self.waits[k] += 1
        self.log("val/nets_improving", float(sum(wait < self.patience for wait in self.waits)))
        if all(wait >= self.patience for wait in self.waits):
            self.trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["early_stopping"] = {"best_scores": self.best_scores, "best_states": self.best_states,
                                        "waits": self.waits}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["early_stopping"]
        self.best_scores, self.best_states, self.waits = state["best_scores"], state["best_states"], state["waits"]

    def on_train_start(self) -> None:
        if all(wait >= self.patience for wait in self.waits):  # resumed from the checkpoint of a finished training
            self.trainer.should_stop = True

    def on_fit_end(self) -> None:
        for k, state in enumerate(self.best_states):
            self.bank.load_state_of(k, state)

    def configure_optimizers(self):
        return torch.optim.Adam(self.bank.parameters(), lr=self.lr)


def fit_fusion(cfg: DictConfig, basic: Segments, labels: np.ndarray, subsets: Sequence[Sequence[int]],
               logger, folder: Path, resume: str | None) -> MhpfModule:
    """Train one MHPF per subset of the modalities on the basic windows, checkpointed in `folder` (resumed from the
    checkpoint `resume`); returns the module holding every net at its best validation epoch (`best_scores`)."""
    L.seed_everything(cfg.seed)  # the fusion's draws do not depend on whether the tables were computed or cached
    datamodule = FusionDataModule(basic, labels, cfg.data, cfg.seed)
    bank = MhpfBank(cfg.fusion.kind, basic.probs.shape[1], subsets, NUM_BASIC, cfg.fusion.num_heads,
                    init=cfg.fusion.init)
    if cfg.fusion.class_weighted:  # each net's from the training windows it sees (those with one of its modalities)
        sees = (datamodule.train_present[None] & bank.subsets[:, None]).any(dim=-1)
        weights = torch.stack([class_weights(datamodule.train_labels[rows], NUM_BASIC) for rows in sees])
    else:
        weights = torch.ones(len(subsets), NUM_BASIC)
    module = MhpfModule(bank, weights, cfg.optim.lr, cfg.early_stopping.patience, cfg.fusion.loss)
    trainer, _ = build_trainer(cfg.trainer, folder=folder, logger=logger, every=cfg.checkpoint_every)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    return module.eval()


@torch.no_grad()
def fuse(module: MhpfModule, segments: Segments) -> np.ndarray:
    """[K, N, 8] renormalised fused probabilities of every net of the bank; NaN rows where a net has no modality."""
    probs = torch.as_tensor(np.nan_to_num(segments.probs, nan=0.0), dtype=torch.float32)
    fused, valid = module(probs, torch.as_tensor(segments.present))
    out = fused_probabilities(fused).double().numpy()
    out[~valid.numpy()] = np.nan
    return out


def plot_weights(weights: np.ndarray, modalities: Sequence[str], path: Path, title: str) -> Path:
    """The fusion's effective weight of each modality (rows) for each basic emotion (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * NUM_BASIC, 1.2 + 0.6 * len(modalities)))
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(NUM_BASIC), BASIC_EMOTIONS, rotation=35, ha="right")
    ax.set_yticks(range(len(modalities)), modalities)
    for (i, j), value in np.ndenumerate(weights):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value < 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="weight")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def mean_weights(module: MhpfModule, segments: Segments, k: int) -> np.ndarray:
    """[M, 8] effective modality weights of net k averaged over the segments (constant per presence pattern when
    static)."""
    rows = segments.present.all(axis=1)
    rows = rows if rows.any() else segments.present.any(axis=1)
    probs = torch.as_tensor(np.nan_to_num(segments.probs[rows], nan=0.0), dtype=torch.float32)
    weights, _ = module.bank.effective_weights(probs, torch.as_tensor(segments.present[rows]))
    return weights[k].mean(dim=0).numpy()
