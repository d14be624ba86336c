"""Compound expressions on C-EXPR-DB, zero-shot: modality tables -> MHPF trained on basic expressions -> PPA and PFSA
-> per-frame predictions, the challenge submission file and its score; every subset of the modalities as a nested run.

Reads top to bottom: data (tables, windows, labels) -> fusion training (Lightning) -> compound predictions -> MLflow.

The data root holds two halves, in the layout the embedded synthetic set is written in:

    cexpr/annotation/<V>.csv, cexpr/videos/<V>(.mp4|/), cexpr/tables/<modality>.csv    the compound test videos
    affwild2/EXPR/<V>.txt, affwild2/tables/<modality>.csv                             basic-expression training

Every table row is one 4 s / 2 s window (`affectlab.datasets.cexpr.window_id`); the fusion reads nothing else.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

from affectlab.datasets.affwild2 import AFFWILD2_EXPRESSIONS, read_affwild2_expression
from affectlab.datasets.cexpr import (
    CexprVideo,
    frame_labels,
    list_cexpr_videos,
    read_cexpr_annotation,
    segment_windows,
    window_id,
)
from affectlab.datasets.modality_tables import align_modality_tables, read_modality_table
from affectlab.datasets.synthetic_cexpr import ensure_synthetic_cexpr
from affectlab.fusion import (
    BASIC_EMOTIONS,
    COMPOUND_EXPRESSIONS,
    class_prototypes,
    class_weights,
    create_mhpf,
    fused_probabilities,
    mhpf_loss,
    pfsa_scores,
    ppa_scores,
    score_frames,
    score_submission,
    segments_to_frames,
    write_submission,
)
from affectlab.lab.config import ConfigError, flatten, load_config
from affectlab.lab.report import print_summary
from affectlab.lab.tracking import make_logger

assert BASIC_EMOTIONS == AFFWILD2_EXPRESSIONS, "the fusion and the tables must share AffWild2's class order"
NUM_BASIC = len(BASIC_EMOTIONS)


# --- data ----------------------------------------------------------------------------------------------------------


@dataclass
class Segments:
    """Windows with their modality probabilities: probs [N, M, 8] (NaN where missing), present [N, M]."""

    ids: tuple[str, ...]
    probs: np.ndarray
    present: np.ndarray

    def subset(self, modalities: Sequence[int]) -> Segments:
        return Segments(self.ids, self.probs[:, list(modalities)], self.present[:, list(modalities)])


@dataclass
class CompoundVideo:
    video: CexprVideo
    windows: np.ndarray  # [S, 2] frame ranges, in table-row order for this video
    truth: np.ndarray  # [num_frames] index into C-EXPR-DB's classes, -1 unannotated


def resolve_root(data: DictConfig) -> Path:
    if data.root:
        root = Path(data.root).expanduser()
        if not (root / "cexpr").is_dir() or not (root / "affwild2").is_dir():
            raise ConfigError(f"data.root={data.root!r} lacks cexpr/ or affwild2/ (see affectlab.lab.cexpr's layout)")
        return root
    return ensure_synthetic_cexpr(**OmegaConf.to_container(data.synthetic))


def modality_names(root: Path, configured: Sequence[str] | None) -> list[str]:
    """The configured modalities, or every table found in both tables folders."""
    folders = (root / "cexpr" / "tables", root / "affwild2" / "tables")
    available = [{p.stem for p in folder.glob("*.csv")} for folder in folders]
    if configured:
        for folder, names in zip(folders, available):
            lacking = [m for m in configured if m not in names]
            if lacking:
                raise ConfigError(f"data.modalities={list(configured)}: no table {lacking} in {folder}")
        return list(configured)
    names = sorted(available[0] & available[1])
    if not names:
        raise ConfigError(f"no modality table in both {folders[0]} and {folders[1]}")
    return names


def load_segments(folder: Path, modalities: Sequence[str], ids: Sequence[str]) -> Segments:
    tables = [read_modality_table(folder / f"{name}.csv") for name in modalities]
    order, probs, present = align_modality_tables(tables, ids)
    return Segments(order, probs, present)


def window_majority(labels: np.ndarray) -> int:
    """The most frequent annotated label of a window's frames, -1 if none is annotated."""
    annotated = labels[labels >= 0]
    return int(np.bincount(annotated).argmax()) if annotated.size else -1


def load_basic(root: Path, modalities: Sequence[str], data: DictConfig) -> tuple[Segments, np.ndarray]:
    """The labelled basic-expression windows (label = the majority frame label) with at least one modality."""
    files = sorted((root / "affwild2" / "EXPR").glob("*.txt"))
    if not files:
        raise ConfigError(f"{root / 'affwild2' / 'EXPR'}: no AffWild2 expression label files")
    ids, labels = [], []
    for path in files:
        frames = read_affwild2_expression(path)
        for k, (start, end) in enumerate(_windows(len(frames), data.basic_fps, data)):
            ids.append(window_id(path.stem, k))
            labels.append(window_majority(frames[start:end]))
    segments = load_segments(root / "affwild2" / "tables", modalities, ids)
    keep = (np.asarray(labels) >= 0) & segments.present.any(axis=1)
    kept = Segments(tuple(np.asarray(ids)[keep]), segments.probs[keep], segments.present[keep])
    return kept, np.asarray(labels)[keep]


def load_compound(root: Path, modalities: Sequence[str], data: DictConfig) -> tuple[list[CompoundVideo], Segments]:
    videos, ids = [], []
    for video in list_cexpr_videos(root / "cexpr"):
        segments = read_cexpr_annotation(video.annotation, duration_s=video.duration_s)
        windows = _windows(video.num_frames, video.fps, data)
        ids.extend(window_id(video.name, k) for k in range(len(windows)))
        videos.append(CompoundVideo(video, windows, frame_labels(segments, video.num_frames, video.fps)))
    return videos, load_segments(root / "cexpr" / "tables", modalities, ids)


def _windows(num_frames: int, fps: float, data: DictConfig) -> np.ndarray:
    return segment_windows(num_frames, fps, data.window_s, data.hop_s, data.min_last_s)


class FusionDataModule(L.LightningDataModule):
    """Basic-expression windows with at least one modality, as tensors (probs with NaN zeroed, presence, label),
    split once into train/val."""

    def __init__(self, segments: Segments, labels: np.ndarray, data: DictConfig, seed: int):
        super().__init__()
        self.cfg = data
        keep = segments.present.any(axis=1)
        segments, labels = Segments(segments.ids, segments.probs[keep], segments.present[keep]), labels[keep]
        order = np.random.default_rng(seed).permutation(len(labels))
        n_val = max(1, int(round(data.val_fraction * len(labels))))
        probs = torch.as_tensor(np.nan_to_num(segments.probs, nan=0.0), dtype=torch.float32)
        present = torch.as_tensor(segments.present)
        target = torch.as_tensor(labels, dtype=torch.long)
        self.val_set = TensorDataset(*(t[order[:n_val]] for t in (probs, present, target)))
        self.train_set = TensorDataset(*(t[order[n_val:]] for t in (probs, present, target)))
        self.train_labels = target[order[n_val:]]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.cfg.batch_size, shuffle=True, num_workers=self.cfg.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.cfg.batch_size, num_workers=self.cfg.num_workers)


# --- the fusion ------------------------------------------------------------------------------------------------------


class MhpfModule(L.LightningModule):
    """Trains an MHPF net with class-weighted cross-entropy; selects on the mean of UAR, WAR, macro- and weighted F1."""

    def __init__(self, net: torch.nn.Module, weights: torch.Tensor | None, lr: float):
        super().__init__()
        self.net, self.lr = net, lr
        self.register_buffer("class_weights", weights if weights is not None else torch.ones(NUM_BASIC))
        self.val_metrics = MetricCollection(
            {
                "uar": MulticlassRecall(NUM_BASIC, average="macro"),
                "war": MulticlassAccuracy(NUM_BASIC, average="micro"),
                "f1_macro": MulticlassF1Score(NUM_BASIC, average="macro"),
                "f1_weighted": MulticlassF1Score(NUM_BASIC, average="weighted"),
            },
            prefix="val/",
        )

    def forward(self, probs: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.net(probs, present)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        probs, present, target = batch
        loss = mhpf_loss(self(probs, present), target, self.class_weights)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        probs, present, target = batch
        self.val_metrics.update(self(probs, present).argmax(dim=-1), target)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict(values)
        # the early-stopping criterion of the 9th ABAW compound system
        self.log("val/score", torch.stack(list(values.values())).mean(), prog_bar=True)
        self.val_metrics.reset()

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


def fit_fusion(cfg: DictConfig, basic: Segments, labels: np.ndarray, logger, folder: Path) -> MhpfModule:
    """Train an MHPF on the basic windows' modalities; returns the module with the best validation weights."""
    datamodule = FusionDataModule(basic, labels, cfg.data, cfg.seed)
    weights = class_weights(datamodule.train_labels, NUM_BASIC) if cfg.fusion.class_weighted else None
    net = create_mhpf(cfg.fusion.kind, basic.probs.shape[1], NUM_BASIC, cfg.fusion.num_heads)
    module = MhpfModule(net, weights, cfg.optim.lr)
    best = ModelCheckpoint(dirpath=folder, filename="best-{epoch:02d}", monitor="val/score", mode="max")
    stop = EarlyStopping(monitor="val/score", mode="max", patience=cfg.early_stopping.patience)
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True), logger=logger, callbacks=[best, stop],
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    if best.best_model_path:
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    module.best_val_score = float(best.best_model_score) if best.best_model_score is not None else float("nan")
    return module.eval()


@torch.no_grad()
def fuse(module: MhpfModule, segments: Segments) -> np.ndarray:
    """[N, 8] renormalised fused probabilities; NaN rows where no modality is present."""
    out = np.full((len(segments.ids), NUM_BASIC), np.nan)
    rows = segments.present.any(axis=1)
    probs = torch.as_tensor(np.nan_to_num(segments.probs[rows], nan=0.0), dtype=torch.float32)
    fused = fused_probabilities(module(probs, torch.as_tensor(segments.present[rows])))
    out[rows] = fused.double().numpy()
    return out


# --- compound predictions -----------------------------------------------------------------------------------------------


def frame_predictions(videos: Sequence[CompoundVideo], scores: np.ndarray) -> dict[str, np.ndarray]:
    """Window compound scores [N, 7] (NaN rows: nothing to say) -> per-frame compound index of every video."""
    predictions, row = {}, 0
    for item in videos:
        count = len(item.windows)
        chunk, windows = scores[row : row + count], item.windows
        row += count
        known = ~np.isnan(chunk).any(axis=1)
        if not known.any():  # no window of this video has any modality: a constant guess, the first class
            predictions[item.video.name] = np.zeros(item.video.num_frames, dtype=np.int64)
            continue
        frames = segments_to_frames(windows[known, 0], windows[known, 1], chunk[known], item.video.num_frames)
        predictions[item.video.name] = frames.argmax(axis=1)
    return predictions


def compound_methods(
    fused: np.ndarray, basic_fused: np.ndarray, basic_labels: np.ndarray, comp: DictConfig
) -> dict[str, np.ndarray]:
    """PPA and PFSA window scores [N, 7] from the fused basic-emotion probabilities (PFSA's prototypes: the class
    means of the fused probabilities of the basic training windows)."""
    prototypes = class_prototypes(basic_fused, basic_labels, NUM_BASIC)
    known = ~np.isnan(fused).any(axis=1)
    pfsa = np.full((len(fused), len(COMPOUND_EXPRESSIONS)), np.nan)
    pfsa[known] = pfsa_scores(fused[known], prototypes, weighted=comp.pfsa_weighted, temperature=comp.pfsa_temperature)
    return {"ppa": ppa_scores(fused, weighted=comp.ppa_weighted, mask=comp.ppa_mask), "pfsa": pfsa}


def truth_of(videos: Sequence[CompoundVideo]) -> dict[str, np.ndarray]:
    return {item.video.name: item.truth for item in videos}


def compound_f1(videos: Sequence[CompoundVideo], scores: np.ndarray) -> float:
    predictions = frame_predictions(videos, scores)
    names = [v.video.name for v in videos]
    return score_frames(
        np.concatenate([predictions[n] for n in names]), np.concatenate([truth_of(videos)[n] for n in names])
    ).macro_f1


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
def mean_weights(module: MhpfModule, segments: Segments) -> np.ndarray:
    """[M, 8] effective modality weights averaged over the segments (constant per presence pattern when static)."""
    rows = segments.present.all(axis=1)
    rows = rows if rows.any() else segments.present.any(axis=1)
    probs = torch.as_tensor(np.nan_to_num(segments.probs[rows], nan=0.0), dtype=torch.float32)
    return module.net.effective_weights(probs, torch.as_tensor(segments.present[rows])).mean(dim=0).numpy()


# --- the run ---------------------------------------------------------------------------------------------------------


def evaluate_subset(
    cfg: DictConfig, module: MhpfModule | None, basic: Segments, labels: np.ndarray, compound: Segments,
    videos: Sequence[CompoundVideo],
) -> dict[str, float]:
    """Compound macro-F1 of PPA and PFSA for one modality subset. `module` None: a single modality, which MHPF passes
    through unchanged (one modality's softmax weight is 1), so no training is needed."""
    if module is None:
        fused, basic_fused = compound.probs[:, 0], basic.probs[:, 0]
    else:
        fused, basic_fused = fuse(module, compound), fuse(module, basic)
    known = ~np.isnan(basic_fused).any(axis=1)
    methods = compound_methods(fused, basic_fused[known], labels[known], cfg.compound)
    return {f"compound_f1/{name}": compound_f1(videos, scores) for name, scores in methods.items()}


def run(cfg: DictConfig) -> dict[str, float]:
    """Train the fusion on basic expressions, predict compounds with PPA and PFSA, score; returns the metrics."""
    L.seed_everything(cfg.seed, workers=True)
    if cfg.fusion.kind not in ("static", "input_dependent"):
        raise ConfigError(f"fusion.kind={cfg.fusion.kind!r}: expected 'static' or 'input_dependent'")
    root = resolve_root(cfg.data)
    modalities = modality_names(root, cfg.data.modalities)
    basic, labels = load_basic(root, modalities, cfg.data)
    videos, compound = load_compound(root, modalities, cfg.data)

    logger = make_logger(cfg)
    logger.log_hyperparams(flatten(cfg) | {"modalities": ",".join(modalities)})
    folder = Path(cfg.checkpoint_dir) / time.strftime(f"%Y%m%d-%H%M%S-{os.getpid()}")
    module = fit_fusion(cfg, basic, labels, logger, folder)
    client, run_id = logger.experiment, logger.run_id
    artifacts = Path(tempfile.mkdtemp(prefix="affectlab-cexpr-"))

    # the main method: all modalities fused, PPA; its submission file is scored through the file, as the challenge does
    fused, basic_fused = fuse(module, compound), fuse(module, basic)
    methods = compound_methods(fused, basic_fused, labels, cfg.compound)
    truth = truth_of(videos)
    metrics: dict[str, float] = {}
    for name, scores in methods.items():
        submission = write_submission(artifacts / f"submission_{name}.csv", frame_predictions(videos, scores))
        score = score_submission(submission, truth)
        metrics[f"compound_f1/fusion_{name}"] = score.macro_f1
        for cls, value in score.per_class_f1.items():
            if np.isfinite(value):
                client.log_metric(run_id, f"compound_f1_class/{name}/{cls.replace(' ', '_')}", value)
        client.log_artifact(run_id, str(submission))
    metrics["basic_val_score/fusion"] = module.best_val_score
    for m, name in enumerate(modalities):  # every modality alone, through the same PPA
        single = evaluate_subset(cfg, None, basic.subset([m]), labels, compound.subset([m]), videos)
        metrics[f"compound_f1/{name}_ppa"] = single["compound_f1/ppa"]
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)

    weights_png = plot_weights(mean_weights(module, compound), modalities, artifacts / "fusion_weights.png",
                               title=f"MHPF ({cfg.fusion.kind}) modality weights")
    client.log_artifact(run_id, str(weights_png))
    config_file = artifacts / "config.yaml"
    OmegaConf.save(cfg, config_file)
    client.log_artifact(run_id, str(config_file))

    if cfg.ablation:
        ablation = run_ablation(cfg, modalities, basic, labels, compound, videos, module, client, logger)
        client.log_table(run_id, data=ablation, artifact_file="modality_ablation.json")
        _print_ablation(ablation)
    client.set_terminated(run_id)
    print_summary(metrics, title=f"C-EXPR-DB compound expressions (MLflow run {run_id})")
    return metrics


def run_ablation(cfg, modalities, basic, labels, compound, videos, full_module, client, logger) -> dict[str, list]:
    """Every non-empty subset of the modalities as a nested run; returns the summary table as columns."""
    table: dict[str, list] = {"modalities": [], "compound_f1_ppa": [], "compound_f1_pfsa": [], "basic_val_score": []}
    for size in range(1, len(modalities) + 1):
        for subset in itertools.combinations(range(len(modalities)), size):
            names = [modalities[m] for m in subset]
            if size == 1:
                module, basic_score = None, float("nan")
            elif size == len(modalities):
                module, basic_score = full_module, full_module.best_val_score
            else:
                folder = Path(cfg.checkpoint_dir) / f"ablation-{'+'.join(names)}-{os.getpid()}"
                module = fit_fusion(cfg, basic.subset(subset), labels, False, folder)
                basic_score = module.best_val_score
            scores = evaluate_subset(cfg, module, basic.subset(subset), labels, compound.subset(subset), videos)
            child = client.create_run(
                logger.experiment_id, run_name="+".join(names), tags={"mlflow.parentRunId": logger.run_id}
            ).info.run_id
            client.log_param(child, "modalities", ",".join(names))
            for key, value in scores.items():
                client.log_metric(child, key, value)
            if np.isfinite(basic_score):
                client.log_metric(child, "basic_val_score", basic_score)
            client.set_terminated(child)
            table["modalities"].append("+".join(names))
            table["compound_f1_ppa"].append(scores["compound_f1/ppa"])
            table["compound_f1_pfsa"].append(scores["compound_f1/pfsa"])
            table["basic_val_score"].append(basic_score)
    return table


def _print_ablation(table: dict[str, list]) -> None:
    view = Table(title="modality ablation: compound macro-F1")
    for column in table:
        view.add_column(column, justify="left" if column == "modalities" else "right")
    for row in zip(*table.values()):
        view.add_row(row[0], *(f"{v:.4f}" for v in row[1:]))
    Console().print(view)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    import sys

    cfg = load_config("cexpr", sys.argv[1:] if argv is None else argv)
    return run(cfg)
