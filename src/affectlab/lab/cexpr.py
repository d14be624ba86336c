"""Compound expressions on C-EXPR-DB, zero-shot: modality tables -> MHPF trained on basic expressions -> PPA and PFSA
-> per-frame predictions, the challenge submission file and its score; every subset of the modalities as a nested run.

Reads top to bottom: data (tables, windows, labels) -> fusion training (Lightning) -> compound predictions -> MLflow.

The data root holds one folder per data set, in the layout the embedded synthetic set is written in:

    cexpr/annotation/<V>.csv, cexpr/videos/<V>(.mp4|/), cexpr/tables/<modality>.csv    the compound test videos
    affwild2/EXPR/<V>.txt, affwild2/videos/<V>, affwild2/tables/<modality>.csv        basic-expression training
    afew/videos/<Class>/<clip>, afew/tables/<modality>.csv                            basic-expression training

(videos/ of the basic sets is read only for the visual modalities). An AFEW clip is one segment,
window_id("<Class>/<clip>", 0); AffWild2 and C-EXPR-DB videos are cut into windows.

Every table row is one 4 s / 2 s window (`affectlab.datasets.cexpr.window_id`); the fusion reads nothing else.
"""

from __future__ import annotations

import hashlib
import itertools
import json
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
from torchmetrics.functional.classification import multiclass_f1_score

from affectlab.datasets.affwild2 import AFFWILD2_EXPRESSIONS, read_afew, read_affwild2_expression
from affectlab.datasets.cexpr import (
    find_video,
    frame_labels,
    list_cexpr_videos,
    read_cexpr_annotation,
    read_frames,
    sample_frames,
    segment_windows,
    video_info,
    window_id,
)
from affectlab.datasets.modality_tables import (
    CEXPR_COMPOUNDS,
    align_modality_tables,
    read_modality_table,
    write_modality_table,
)
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
from affectlab.models.clip import create_clip
from affectlab.models.zero_shot import ZeroShotClip

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
class WindowedVideo:
    """A video cut into windows: `truth` per frame (C-EXPR-DB or AffWild2 index, -1 unannotated)."""

    name: str
    path: Path | None  # the video file or frame folder; None when no frames are needed
    num_frames: int
    windows: np.ndarray  # [S, 2] frame ranges; window k is table row window_id(name, k)
    truth: np.ndarray

    def ids(self) -> list[str]:
        return [window_id(self.name, k) for k in range(len(self.windows))]


def resolve_root(data: DictConfig) -> Path:
    if data.root:
        root = Path(data.root).expanduser()
        lacking = [half for half in ("cexpr", *data.basic_sets) if not (root / half).is_dir()]
        if lacking:
            raise ConfigError(f"data.root={data.root!r} lacks {lacking} (see affectlab.lab.cexpr's layout)")
        return root
    return ensure_synthetic_cexpr(**OmegaConf.to_container(data.synthetic))


def _windows(num_frames: int, fps: float, data: DictConfig) -> np.ndarray:
    return segment_windows(num_frames, fps, data.window_s, data.hop_s, data.min_last_s)


def compound_videos(root: Path, data: DictConfig) -> list[WindowedVideo]:
    videos = []
    for video in list_cexpr_videos(root / "cexpr"):
        segments = read_cexpr_annotation(video.annotation, duration_s=video.duration_s)
        truth = frame_labels(segments, video.num_frames, video.fps)
        windows = _windows(video.num_frames, video.fps, data)
        videos.append(WindowedVideo(video.name, video.path, video.num_frames, windows, truth))
    return videos


def affwild2_videos(root: Path, data: DictConfig, need_frames: bool) -> list[WindowedVideo]:
    """AffWild2 label files (and, for the visual modalities, their videos in affwild2/videos/)."""
    files = sorted((root / "affwild2" / "EXPR").glob("*.txt"))
    if not files:
        raise ConfigError(f"{root / 'affwild2' / 'EXPR'}: no AffWild2 expression label files")
    videos = []
    for path in files:
        truth = read_affwild2_expression(path)
        video = find_video(root / "affwild2" / "videos", path.stem, path) if need_frames else None
        videos.append(WindowedVideo(path.stem, video, len(truth), _windows(len(truth), data.basic_fps, data), truth))
    return videos


def afew_videos(root: Path, data: DictConfig, need_frames: bool) -> list[WindowedVideo]:
    """AFEW's clips, each one window over the whole clip labelled with its class folder."""
    videos = []
    for clip in read_afew(root / "afew" / "videos"):
        num_frames, _ = video_info(clip.path)
        name = f"{clip.path.parent.name}/{clip.path.stem}"
        windows = np.array([[0, num_frames]])
        videos.append(WindowedVideo(name, clip.path, num_frames, windows, np.full(num_frames, clip.label)))
    return videos


BASIC_SETS = {"affwild2": affwild2_videos, "afew": afew_videos}


def window_majority(labels: np.ndarray) -> int:
    """The most frequent annotated label of a window's frames, -1 if none is annotated."""
    annotated = labels[labels >= 0]
    return int(np.bincount(annotated).argmax()) if annotated.size else -1


def modality_names(
    root: Path, configured: Sequence[str] | None, visual: Sequence[str], halves: Sequence[str]
) -> list[str]:
    """The configured modalities, or every table found in the tables folders of all `halves` plus the visual ones."""
    folders = [root / half / "tables" for half in halves]
    available = [{p.stem for p in folder.glob("*.csv")} | set(visual) for folder in folders]
    if configured:
        for folder, names in zip(folders, available):
            lacking = [m for m in configured if m not in names]
            if lacking:
                raise ConfigError(f"data.modalities={list(configured)}: no table {lacking} in {folder}")
        return list(configured)
    names = sorted(set.intersection(*available))
    if not names:
        raise ConfigError(f"no modality table in every one of {[str(f) for f in folders]}")
    return names


def load_segments(paths: Sequence[Path], ids: Sequence[str]) -> Segments:
    order, probs, present = align_modality_tables([read_modality_table(path) for path in paths], ids)
    return Segments(order, probs, present)


def table_paths(root: Path, half: str, modalities: Sequence[str], visual_dir: Path | None) -> list[Path]:
    """Where each modality's table for `half` ("cexpr", "affwild2", "afew") is: the visual cache or data.root."""
    return [
        visual_dir / half / f"{m}.csv" if visual_dir is not None and (visual_dir / half / f"{m}.csv").is_file()
        else root / half / "tables" / f"{m}.csv"
        for m in modalities
    ]


def basic_training_set(videos: Sequence[WindowedVideo], segments: Segments) -> tuple[Segments, np.ndarray]:
    """The labelled windows (label = the majority frame label) with at least one modality present."""
    labels = np.array([window_majority(v.truth[start:end]) for v in videos for start, end in v.windows])
    keep = (labels >= 0) & segments.present.any(axis=1)
    return Segments(tuple(np.asarray(segments.ids)[keep]), segments.probs[keep], segments.present[keep]), labels[keep]


# --- visual modalities: tables computed from the frames, cached ------------------------------------------------------


def clip_frames(frames: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> CLIP input [T, 3, size, size]."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


@torch.no_grad()
def zero_shot_tables(
    model: ZeroShotClip, videos: Sequence[WindowedVideo], visual: DictConfig, clip
) -> tuple[np.ndarray, np.ndarray]:
    """Basic [windows, 8] and compound [windows, 7] probabilities of every window of `videos`, frames sampled
    uniformly inside each window."""
    basic, compound = [], []
    for video in videos:
        count, _ = video_info(video.path)  # may differ a little from the label timeline's length
        last = min(count, video.num_frames) - 1
        indices = [np.minimum(sample_frames(a, b, visual.frames_per_window), last) for a, b in video.windows]
        needed = np.unique(np.concatenate(indices))
        frames = clip_frames(read_frames(video.path, needed), clip.image_size, clip.mean, clip.std)
        position = {int(frame): k for k, frame in enumerate(needed)}
        for start in range(0, len(indices), visual.batch_size):
            batch = indices[start : start + visual.batch_size]
            clips = torch.stack([frames[[position[int(i)] for i in window]] for window in batch])
            basic_probs, compound_probs = model(clips)
            basic.append(basic_probs.double().numpy())
            compound.append(compound_probs.double().numpy())
    return np.concatenate(basic), np.concatenate(compound)


VISUAL_MODALITIES = ("zero_shot_clip",)
COMPOUND_TABLES = "compound"  # <tables>/compound/<modality>.csv: a modality's direct compound predictions


def visual_tables(cfg: DictConfig, root: Path, halves: dict[str, Sequence[WindowedVideo]]) -> Path | None:
    """Compute the visual modalities' tables once per (data, model, sampling) and cache them; returns their folder,
    which mirrors data.root: <folder>/<half>/<modality>.csv, and <folder>/cexpr/compound/<modality>.csv."""
    visual = cfg.visual
    unknown = [m for m in visual.modalities if m not in VISUAL_MODALITIES]
    if unknown:
        raise ConfigError(f"visual.modalities has {unknown}; expected a subset of {list(VISUAL_MODALITIES)}")
    if not visual.modalities:
        return None
    key = json.dumps([str(root.resolve()), OmegaConf.to_container(visual), OmegaConf.to_container(cfg.data), cfg.seed],
                     sort_keys=True, default=str)
    folder = Path(visual.cache_dir) / hashlib.sha256(key.encode()).hexdigest()[:16]
    direct = folder / "cexpr" / COMPOUND_TABLES / "zero_shot_clip.csv"  # compound truth exists for C-EXPR-DB only
    if direct.is_file() and all((folder / half / "zero_shot_clip.csv").is_file() for half in halves):
        return folder
    torch.manual_seed(cfg.seed)  # a randomly initialised CLIP is the same one every run
    clip = create_clip(visual.backbone, visual.pretrained)
    model = ZeroShotClip(clip.model, clip.tokenizer)
    for half, videos in halves.items():
        ids = [i for v in videos for i in v.ids()]
        basic, compound = zero_shot_tables(model, videos, visual, clip)
        write_modality_table(folder / half / "zero_shot_clip.csv", ids, basic)
        if half == "cexpr":
            write_modality_table(direct, ids, compound, CEXPR_COMPOUNDS)
    return folder


def direct_compound_tables(root: Path, modalities: Sequence[str], visual_dir: Path | None) -> dict[str, Path]:
    """The modalities that also predict compounds directly, with the table that holds those predictions."""
    folders = [root / "cexpr" / "tables" / COMPOUND_TABLES]
    if visual_dir is not None:
        folders.insert(0, visual_dir / "cexpr" / COMPOUND_TABLES)
    found = {}
    for m in modalities:
        for folder in folders:
            if (folder / f"{m}.csv").is_file():
                found[m] = folder / f"{m}.csv"
                break
    return found


def split_indices(count: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices of the basic windows: one seeded shuffle, the first val_fraction held out."""
    order = np.random.default_rng(seed).permutation(count)
    n_val = max(1, int(round(val_fraction * count)))
    return order[n_val:], order[:n_val]


class FusionDataModule(L.LightningDataModule):
    """Basic-expression windows with at least one modality, as tensors (probs with NaN zeroed, presence, label),
    split once into train/val."""

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
        self.train_labels = target[train]

    def train_dataloader(self) -> DataLoader:
        cfg = self.cfg
        return DataLoader(self.train_set, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers)

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


# --- compound predictions --------------------------------------------------------------------------------------------


def frame_predictions(videos: Sequence[WindowedVideo], scores: np.ndarray) -> dict[str, np.ndarray]:
    """Window compound scores [N, 7] (NaN rows: nothing to say) -> per-frame compound index of every video."""
    predictions, row = {}, 0
    for item in videos:
        count = len(item.windows)
        chunk, windows = scores[row : row + count], item.windows
        row += count
        known = ~np.isnan(chunk).any(axis=1)
        if not known.any():  # no window of this video has any modality: a constant guess, the first class
            predictions[item.name] = np.zeros(item.num_frames, dtype=np.int64)
            continue
        frames = segments_to_frames(windows[known, 0], windows[known, 1], chunk[known], item.num_frames)
        predictions[item.name] = frames.argmax(axis=1)
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


def truth_of(videos: Sequence[WindowedVideo]) -> dict[str, np.ndarray]:
    return {item.name: item.truth for item in videos}


def compound_f1(videos: Sequence[WindowedVideo], scores: np.ndarray) -> float:
    predictions = frame_predictions(videos, scores)
    names = [v.name for v in videos]
    return score_frames(
        np.concatenate([predictions[n] for n in names]), np.concatenate([truth_of(videos)[n] for n in names])
    ).macro_f1


def basic_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    """Macro-F1 over the 8 basic classes of the windows that have probabilities (a missing modality has none)."""
    known = ~np.isnan(probs).any(axis=1)
    if not known.any():
        return float("nan")
    predictions = torch.as_tensor(probs[known].argmax(axis=1))
    return float(multiclass_f1_score(predictions, torch.as_tensor(labels[known]), NUM_BASIC, average="macro"))


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
    videos: Sequence[WindowedVideo],
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
    counts = (cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1), os.environ.get("WORLD_SIZE", 1))
    if any(str(count) != "1" for count in counts):
        # a few thousand parameters on tables: one process; several would each score and log the same compounds
        raise ConfigError("trainer.devices and trainer.num_nodes must be 1: the fusion trains on one process")
    unknown = [name for name in cfg.data.basic_sets if name not in BASIC_SETS]
    if unknown or not cfg.data.basic_sets:
        raise ConfigError(
            f"data.basic_sets={list(cfg.data.basic_sets)}: expected a non-empty subset of {list(BASIC_SETS)}"
        )
    if cfg.fusion.kind not in ("static", "input_dependent"):
        raise ConfigError(f"fusion.kind={cfg.fusion.kind!r}: expected 'static' or 'input_dependent'")
    root = resolve_root(cfg.data)
    videos = compound_videos(root, cfg.data)
    basic_sets = {name: BASIC_SETS[name](root, cfg.data, bool(cfg.visual.modalities)) for name in cfg.data.basic_sets}
    visual_dir = visual_tables(cfg, root, {"cexpr": videos, **basic_sets})
    modalities = modality_names(root, cfg.data.modalities, cfg.visual.modalities, ["cexpr", *basic_sets])
    compound_ids = [i for v in videos for i in v.ids()]
    compound = load_segments(table_paths(root, "cexpr", modalities, visual_dir), compound_ids)
    parts = [
        load_segments(table_paths(root, name, modalities, visual_dir), [i for v in vids for i in v.ids()])
        for name, vids in basic_sets.items()
    ]
    basic_all = Segments(
        tuple(i for part in parts for i in part.ids),
        np.concatenate([part.probs for part in parts]),
        np.concatenate([part.present for part in parts]),
    )
    basic, labels = basic_training_set([v for vids in basic_sets.values() for v in vids], basic_all)

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
    for weighted, mask in ((True, False), (False, True), (True, True)):  # PPA's options beside the configured one
        variant = ppa_scores(fused, weighted=weighted, mask=mask)
        metrics[f"compound_f1/fusion_ppa{'_weighted' * weighted}{'_masked' * mask}"] = compound_f1(videos, variant)
    metrics["basic_val_score/fusion"] = module.best_val_score
    _, val = split_indices(len(labels), cfg.data.val_fraction, cfg.seed)
    metrics["basic_val_f1/fusion"] = basic_f1(basic_fused[val], labels[val])
    for m, name in enumerate(modalities):  # every modality alone: basic F1 and compounds through the same PPA
        metrics[f"basic_val_f1/{name}"] = basic_f1(basic.probs[val, m], labels[val])
        single = evaluate_subset(cfg, None, basic.subset([m]), labels, compound.subset([m]), videos)
        metrics[f"compound_f1/{name}_ppa"] = single["compound_f1/ppa"]
    for name, path in direct_compound_tables(root, modalities, visual_dir).items():  # zero-shot CLIP's compound words
        table = read_modality_table(path, classes=CEXPR_COMPOUNDS)
        _, direct, _ = align_modality_tables([table], compound.ids)
        metrics[f"compound_f1/{name}_direct"] = compound_f1(videos, direct[:, 0])
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
