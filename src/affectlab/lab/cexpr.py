"""Compound expressions on C-EXPR-DB, zero-shot: modality tables -> MHPF trained on basic expressions -> PPA and PFSA
-> per-frame predictions, the challenge submission file and its score; every subset of the modalities as a nested run.

Reads top to bottom: data (tables, windows, labels) -> fusion training (Lightning) -> compound predictions -> MLflow.

Crash and resume: MHPF's training is checkpointed atomically (`affectlab.lab.checkpoints`) and `resume=auto` continues
it into its MLflow run; the face models train inside the table cache, one stage per fold (checkpointed while training,
its predictions kept when done), so a run killed there picks up at its last checkpoint when started again.

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
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, RandomSampler, TensorDataset
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
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.labelsets import load_label_set
from affectlab.datasets.integrity import file_record, matches, write_atomic
from affectlab.datasets.modality_tables import (
    CEXPR_COMPOUNDS,
    align_modality_tables,
    cached_table_ok,
    read_modality_table,
    read_text_table,
    write_cached_table,
)
from affectlab.datasets.synthetic_cexpr import ensure_synthetic_cexpr
from affectlab.fusion import (
    MhpfBank,
    class_prototypes,
    class_weights,
    fused_probabilities,
    label_space_features,
    label_word_prototypes,
    mhpf_loss,
    pfsa_scores,
    ppa_scores,
    score_frames,
    score_submission,
    segments_to_frames,
    write_submission,
)
from affectlab.lab.checkpoints import (
    AtomicCheckpointIO,
    epoch_checkpoints,
    resume_point,
    ResumableDataLoader,
    newest_intact,
    read_record,
    record_path,
)
from affectlab.lab.config import ConfigError, flatten, load_config
from affectlab.lab.report import print_summary
from affectlab.lab.tracking import make_logger
from affectlab.models.clip import create_clip
from affectlab.models.face_expression import StaticFaceExpression, TemporalEmotionHead
from affectlab.models.text_emotion import load_text_emotion_classifier
from affectlab.models.zero_shot import ZeroShotClip

CEXPR = load_label_set("cexpr")  # the compounds, their pairs of basic classes, and the basic classes (basic8)
BASIC_EMOTIONS, COMPOUND_EXPRESSIONS, PAIRS = CEXPR.basis.classes, CEXPR.compounds, CEXPR.pair_index()
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
    root: Path, configured: Sequence[str] | None, computed: Sequence[str], halves: Sequence[str]
) -> list[str]:
    """The configured modalities, or every table found in the tables folders of all `halves` plus those the run
    computes (visual, and text ones from their texts)."""
    folders = [root / half / "tables" for half in halves]
    available = [{p.stem for p in folder.glob("*.csv")} | set(computed) for folder in folders]
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


def table_paths(root: Path, half: str, modalities: Sequence[str], computed: Path | None) -> list[Path]:
    """Where each modality's table for `half` ("cexpr", "affwild2", "afew") is: the run's computed tables (visual
    modalities, and text modalities from their texts, which win over a given table of the same name) or data.root."""
    return [
        computed / half / f"{m}.csv" if computed is not None and (computed / half / f"{m}.csv").is_file()
        else root / half / "tables" / f"{m}.csv"
        for m in modalities
    ]


def basic_training_set(videos: Sequence[WindowedVideo], segments: Segments) -> tuple[Segments, np.ndarray]:
    """The labelled windows (label = the majority frame label) with at least one modality present."""
    labels = np.array([window_majority(v.truth[start:end]) for v in videos for start, end in v.windows])
    keep = (labels >= 0) & segments.present.any(axis=1)
    return Segments(tuple(np.asarray(segments.ids)[keep]), segments.probs[keep], segments.present[keep]), labels[keep]


# --- modalities computed by the run (from frames or texts), cached as tables -----------------------------------------

VISUAL_MODALITIES = ("zero_shot_clip", "static_face", "dynamic_face")
COMPOUND_TABLES = "compound"  # <tables>/compound/<modality>.csv: a modality's direct compound predictions


def clip_frames(frames: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> CLIP input [T, 3, size, size]."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def face_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> uint8 [T, 3, size, size] (kept as bytes: the face model normalises)."""
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


@dataclass
class WindowFrames:
    """What the visual modalities read of every window of a set of videos, in table-row order."""

    embeddings: torch.Tensor  # [N, T, D] CLIP image embeddings of the T frames sampled uniformly in each window
    faces: torch.Tensor | None  # [N, F, 3, s, s] uint8: F of those frames for the static face model
    face_labels: np.ndarray  # [N, F] the frames' own labels (-1 unannotated; meaningful for the basic sets)


@torch.no_grad()
def read_window_frames(videos: Sequence[WindowedVideo], cfg: DictConfig, clip, with_faces: bool) -> WindowFrames:
    visual, face = cfg.visual, cfg.face
    embeddings, faces, labels = [], [], []
    pick = np.unique(np.linspace(0, visual.frames_per_window - 1, face.frames_per_window).round().astype(int))
    for video in videos:
        count, _ = video_info(video.path)  # may differ a little from the label timeline's length
        last = min(count, video.num_frames) - 1
        indices = np.stack([np.minimum(sample_frames(a, b, visual.frames_per_window), last) for a, b in video.windows])
        needed, position = np.unique(indices, return_inverse=True)
        frames = read_frames(video.path, needed)
        pixels = clip_frames(frames, clip.image_size, clip.mean, clip.std)
        encoded = torch.cat([clip.model.encode_image(pixels[s : s + 256]).float() for s in range(0, len(pixels), 256)])
        embeddings.append(torch.nn.functional.normalize(encoded, dim=-1)[position.reshape(indices.shape)])
        if with_faces:
            faces.append(face_frames(frames, face.image_size)[position.reshape(indices.shape)[:, pick]])
        labels.append(video.truth[np.minimum(indices[:, pick], len(video.truth) - 1)])
    return WindowFrames(torch.cat(embeddings), torch.cat(faces) if with_faces else None, np.concatenate(labels))


class FaceModule(L.LightningModule):
    """Trains a face-expression model (`logits` [B, C] per window or [B, T, C] per frame) with cross-entropy; frames
    or windows labelled -1 do not count."""

    def __init__(self, net: torch.nn.Module, lr: float):
        super().__init__()
        self.net, self.lr = net, lr

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        inputs, target = batch
        logits = self.net.logits(inputs)
        return torch.nn.functional.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=-1)

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


def train_face_model(net: torch.nn.Module, inputs: torch.Tensor, target: torch.Tensor, spec: DictConfig,
                     folder: Path, every: DictConfig | None):
    """A few epochs of Adam on (inputs, target), checkpointed in `folder` and resumed from its newest intact
    checkpoint if an earlier run was killed there; returns the net in eval mode."""
    loader = ResumableDataLoader(TensorDataset(inputs, target), batch_size=spec.batch_size, shuffle=True)
    trainer = L.Trainer(max_epochs=spec.epochs, accelerator="cpu", devices=1, logger=False,
                        callbacks=epoch_checkpoints(folder / "ckpt", every), plugins=[AtomicCheckpointIO()],
                        enable_progress_bar=False, enable_model_summary=False)
    resume = newest_intact(folder)
    trainer.fit(FaceModule(net, spec.lr), train_dataloaders=loader, ckpt_path=str(resume) if resume else None)
    return net.eval()


def save_stage(path: Path, value) -> None:
    """A finished stage's result, written atomically with a size/SHA-256 record beside it."""
    write_atomic(path, lambda scratch: torch.save(value, scratch))
    record = json.dumps(file_record(path))
    write_atomic(record_path(path), lambda scratch: scratch.write_text(record, encoding="utf-8"))


def load_stage(path: Path):
    """The result `save_stage` wrote at `path`, or None when it is absent or damaged (the stage then runs again)."""
    return torch.load(path, weights_only=False) if matches(path, read_record(path)) else None


@torch.no_grad()
def predict_in_batches(net: torch.nn.Module, inputs: torch.Tensor, batch_size: int) -> np.ndarray:
    return torch.cat([net(inputs[s : s + batch_size]) for s in range(0, len(inputs), batch_size)]).double().numpy()


def cross_fitted(make, inputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], folds: dict[str, np.ndarray],
                 num_folds: int, spec: DictConfig, batch_size: int, folder: Path, seed: int,
                 every: DictConfig | None = None) -> dict[str, np.ndarray]:
    """Probabilities [N, 8] of every half from face models trained on the basic halves, cross-fitted: a basic window's
    come from the model whose training folds exclude its video (so the fusion learns how far to trust the model on
    windows it has not seen); the compound videos' are the mean over the fold models.

    Each fold is a stage of its own in `folder`: seeded by (seed, fold) alone, checkpointed while it trains, its
    predictions kept once it is done; so a run killed at any moment and run again gives the same probabilities."""
    basic = [half for half in inputs if half != "cexpr"]
    out = {half: np.zeros((len(inputs[half]), NUM_BASIC)) for half in inputs}
    labelled = {half: (targets[half] >= 0).reshape(len(targets[half]), -1).any(dim=1) for half in basic}
    for fold in range(num_folds):
        done = folder / f"fold{fold}.pt"
        predicted = load_stage(done)
        if predicted is None:
            torch.manual_seed(seed * 1000 + fold)
            train = {half: torch.as_tensor(folds[half] != fold) & labelled[half] for half in basic}
            net = train_face_model(make(), torch.cat([inputs[h][train[h]] for h in basic]),
                                   torch.cat([targets[h][train[h]] for h in basic]), spec, folder / f"fold{fold}",
                                   every)
            predicted = {half: predict_in_batches(net, inputs[half][folds[half] == fold], batch_size) for half in basic}
            predicted["cexpr"] = predict_in_batches(net, inputs["cexpr"], batch_size)
            save_stage(done, predicted)
        for half in basic:
            out[half][folds[half] == fold] = predicted[half]
        out["cexpr"] += predicted["cexpr"] / num_folds
    return out


def video_folds(videos: Sequence[WindowedVideo], folds: int, seed: int) -> np.ndarray:
    """The cross-fitting fold of every window: whole videos (their windows overlap), dealt round-robin, shuffled."""
    order = np.random.default_rng(seed).permutation(len(videos))
    fold_of_video = np.empty(len(videos), dtype=np.int64)
    fold_of_video[order] = np.arange(len(videos)) % folds
    return np.concatenate([np.full(len(v.windows), fold_of_video[i]) for i, v in enumerate(videos)])


def text_tables_of(root: Path, halves: Sequence[str], configured: Sequence[str] | None) -> dict[str, dict[str, Path]]:
    """{modality: {half: <root>/<half>/texts/<modality>.csv}} for the configured text modalities (None: every text
    table that all halves have)."""
    found = [{p.stem for p in (root / half / "texts").glob("*.csv")} for half in halves]
    names = sorted(set.intersection(*found)) if configured is None else list(configured)
    for name in names:
        lacking = [half for half, stems in zip(halves, found) if name not in stems]
        if lacking:
            missing = [str(root / half / "texts" / f"{name}.csv") for half in lacking]
            raise ConfigError(f"text.modalities has {name!r} but {missing} do not exist; expected a text table "
                              "(segment_id,text) in every half")
    return {name: {half: root / half / "texts" / f"{name}.csv" for half in halves} for name in names}


def text_probabilities(classifier, path: Path, ids: Sequence[str], batch_size: int) -> np.ndarray:
    """[N, 8] for the windows `ids` from the text table at `path` (NaN rows where the text is empty)."""
    table_ids, texts = read_text_table(path)
    if set(table_ids) != set(ids):
        extra, lacking = sorted(set(table_ids) - set(ids)), sorted(set(ids) - set(table_ids))
        raise DatasetError(f"{path}: segment ids disagree with the windows of its videos: extra {extra[:3]}, lacking "
                           f"{lacking[:3]}; expected one row per window (an empty text marks a missing one)")
    text_of = dict(zip(table_ids, texts))
    probs = np.full((len(ids), NUM_BASIC), np.nan)
    rows = [k for k, segment in enumerate(ids) if text_of[segment]]
    probs[rows] = classifier.predict([text_of[ids[k]] for k in rows], batch_size).double().numpy()
    return probs


def computed_tables(cfg: DictConfig, root: Path, halves: dict[str, Sequence[WindowedVideo]],
                    texts: dict[str, dict[str, Path]]) -> Path | None:
    """Compute the tables of the visual and text modalities once per (data, models, sampling) and cache them; returns
    their folder, which mirrors data.root: <folder>/<half>/<modality>.csv (and <folder>/cexpr/compound/ for zero-shot
    CLIP's direct compound predictions). A table the folder's manifest does not vouch for (absent, truncated, edited)
    is recomputed with the rest of its modality, never read."""
    visual = cfg.visual
    unknown = [m for m in visual.modalities if m not in VISUAL_MODALITIES]
    if unknown:
        raise ConfigError(f"visual.modalities has {unknown}; expected a subset of {list(VISUAL_MODALITIES)}")
    if not visual.modalities and not texts:
        return None
    sources = {name: {half: file_record(path) for half, path in paths.items()} for name, paths in texts.items()}
    key = json.dumps([str(root.resolve()), OmegaConf.to_container(visual), OmegaConf.to_container(cfg.face),
                      OmegaConf.to_container(cfg.text), OmegaConf.to_container(cfg.data), cfg.seed, sources],
                     sort_keys=True, default=str)
    folder = Path(visual.cache_dir) / hashlib.sha256(key.encode()).hexdigest()[:16]
    ids = {half: [i for v in videos for i in v.ids()] for half, videos in halves.items()}

    def files(name: str) -> list[Path]:
        direct = [folder / "cexpr" / COMPOUND_TABLES / f"{name}.csv"] if name == "zero_shot_clip" else []
        return [folder / half / f"{name}.csv" for half in halves] + direct

    stale = [name for name in (*visual.modalities, *texts) if not all(cached_table_ok(f) for f in files(name))]
    if not stale:
        return folder
    torch.manual_seed(cfg.seed)  # randomly initialised models are the same ones every run
    visual_stale = [name for name in stale if name in VISUAL_MODALITIES]
    if visual_stale:
        visual_modality_tables(cfg, folder, halves, ids, visual_stale)
    text_stale = [name for name in stale if name in texts]
    if text_stale:
        classifier = load_text_emotion_classifier(cfg.text.classifier, BASIC_EMOTIONS, cfg.text.label_map,
                                                  cfg.text.max_length)
        for name in text_stale:
            for half, path in texts[name].items():
                probs = text_probabilities(classifier, path, ids[half], cfg.text.batch_size)
                write_cached_table(folder / half / f"{name}.csv", ids[half], probs)
    return folder


def visual_modality_tables(cfg: DictConfig, folder: Path, halves: dict[str, Sequence[WindowedVideo]],
                           ids: dict[str, list[str]], names: Sequence[str]) -> None:
    """Zero-shot CLIP, the static face model and the dynamic one: frames read once, face models trained on the basic
    halves' windows (cross-fitted), every table written through the manifest."""
    clip = create_clip(cfg.visual.backbone, cfg.visual.pretrained)
    clip.model.eval()
    frames = {half: read_window_frames(videos, cfg, clip, "static_face" in names) for half, videos in halves.items()}
    folds = {half: video_folds(videos, cfg.face.folds, cfg.seed) for half, videos in halves.items() if half != "cexpr"}
    labels = {half: torch.as_tensor([window_majority(v.truth[a:b]) for v in videos for a, b in v.windows])
              for half, videos in halves.items()}
    tables: dict[str, dict[str, np.ndarray]] = {}
    if "zero_shot_clip" in names:
        zero_shot = ZeroShotClip(clip.model, clip.tokenizer, CEXPR.basis.words, CEXPR.words[:len(COMPOUND_EXPRESSIONS)])
        pairs = {half: zero_shot.from_embeddings(item.embeddings) for half, item in frames.items()}
        tables["zero_shot_clip"] = {half: basic.double().numpy() for half, (basic, _) in pairs.items()}
        write_cached_table(folder / "cexpr" / COMPOUND_TABLES / "zero_shot_clip.csv", ids["cexpr"],
                           pairs["cexpr"][1].double().numpy(), CEXPR_COMPOUNDS)
    if "dynamic_face" in names:
        spec = cfg.face.dynamic
        dim = frames["cexpr"].embeddings.shape[-1]
        embeddings = {half: item.embeddings for half, item in frames.items()}
        if spec.standardize:
            embeddings = standardized(embeddings, [half for half in embeddings if half != "cexpr"])
        tables["dynamic_face"] = cross_fitted(
            lambda: TemporalEmotionHead(dim, cfg.visual.frames_per_window, NUM_BASIC, spec.depth, spec.heads),
            embeddings, labels, folds, cfg.face.folds, spec, cfg.visual.batch_size,
            folder / "training" / "dynamic_face", cfg.seed, cfg.checkpoint_every,
        )
    if "static_face" in names:
        spec = cfg.face.static
        tables["static_face"] = cross_fitted(
            lambda: StaticFaceExpression(NUM_BASIC, spec.backbone, pretrained=spec.pretrained),
            {half: item.faces for half, item in frames.items()},
            {half: torch.as_tensor(item.face_labels) for half, item in frames.items()}, folds, cfg.face.folds, spec,
            cfg.visual.batch_size, folder / "training" / "static_face", cfg.seed, cfg.checkpoint_every,
        )
    for name, by_half in tables.items():
        for half, probs in by_half.items():
            write_cached_table(folder / half / f"{name}.csv", ids[half], probs)
    shutil.rmtree(folder / "training", ignore_errors=True)  # the face models' stages: their tables are written


def standardized(embeddings: dict[str, torch.Tensor], basis: Sequence[str]) -> dict[str, torch.Tensor]:
    """Every half's frame embeddings [N, T, D] z-scored per dimension with the mean and standard deviation of the
    frames of the `basis` halves (the basic-expression ones; no labels are read). A frozen CLIP's embeddings of faces
    all point nearly the same way (mean cosine 0.94 between windows for the random tiny CLIP), so the expression
    differences are a sliver of each vector that the temporal head cannot find without this."""
    frames = torch.cat([embeddings[half].flatten(0, 1) for half in basis])
    mean, std = frames.mean(dim=0), frames.std(dim=0).clamp_min(1e-6)
    return {half: (values - mean) / std for half, values in embeddings.items()}


def direct_compound_tables(root: Path, modalities: Sequence[str], computed: Path | None) -> dict[str, Path]:
    """The modalities that also predict compounds directly, with the table that holds those predictions."""
    folders = [root / "cexpr" / "tables" / COMPOUND_TABLES]
    if computed is not None:
        folders.insert(0, computed / "cexpr" / COMPOUND_TABLES)
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


# --- the fusion ------------------------------------------------------------------------------------------------------


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

    def __init__(self, bank: MhpfBank, weights: torch.Tensor, lr: float, patience: int):
        super().__init__()
        self.bank, self.lr, self.patience = bank, lr, patience
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
        loss = mhpf_loss(fused, target, self.class_weights, valid)  # the sum of every net's own loss
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
    bank = MhpfBank(cfg.fusion.kind, basic.probs.shape[1], subsets, NUM_BASIC, cfg.fusion.num_heads)
    if cfg.fusion.class_weighted:  # each net's from the training windows it sees (those with one of its modalities)
        sees = (datamodule.train_present[None] & bank.subsets[:, None]).any(dim=-1)
        weights = torch.stack([class_weights(datamodule.train_labels[rows], NUM_BASIC) for rows in sees])
    else:
        weights = torch.ones(len(subsets), NUM_BASIC)
    module = MhpfModule(bank, weights, cfg.optim.lr, cfg.early_stopping.patience)
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True), logger=logger, enable_model_summary=False,
        callbacks=epoch_checkpoints(folder, cfg.checkpoint_every), plugins=[AtomicCheckpointIO()],
    )
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


PFSA_PROTOTYPES = {"class_means": "pfsa", "clip_text": "pfsa_text"}  # prototype kind -> method name in the metrics


def compound_methods(
    fused: np.ndarray, basic_fused: np.ndarray, basic_labels: np.ndarray, comp: DictConfig,
    label_words: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """PPA and PFSA window scores [N, 7] from the fused basic-emotion probabilities: `pfsa` with the class means of
    the fused probabilities of the basic training windows as prototypes, `pfsa_text` with the CLIP text embeddings
    of the label words `label_words` [8, D] (see affectlab.fusion.pfsa), as `comp.pfsa_prototypes` asks."""
    known = ~np.isnan(fused).any(axis=1)
    methods = {"ppa": ppa_scores(fused, PAIRS, weighted=comp.ppa_weighted, mask=comp.ppa_mask)}
    for kind in comp.pfsa_prototypes:
        if kind == "class_means":
            features, prototypes = fused[known], class_prototypes(basic_fused, basic_labels, NUM_BASIC)
        else:
            prototypes = label_word_prototypes(label_words)
            features = label_space_features(fused[known], prototypes)
        scores = np.full((len(fused), len(COMPOUND_EXPRESSIONS)), np.nan)
        scores[known] = pfsa_scores(features, prototypes, PAIRS, weighted=comp.pfsa_weighted,
                                    temperature=comp.pfsa_temperature)
        methods[PFSA_PROTOTYPES[kind]] = scores
    return methods


@torch.no_grad()
def label_word_embeddings(cfg: DictConfig) -> np.ndarray | None:
    """[8, D] unit CLIP text embeddings of the basic label words in zero-shot CLIP's prompt (the same seeded model as
    the zero-shot table's when it is randomly initialised), or None when PFSA does not use them."""
    unknown = [kind for kind in cfg.compound.pfsa_prototypes if kind not in PFSA_PROTOTYPES]
    if unknown:
        raise ConfigError(f"compound.pfsa_prototypes has {unknown}; expected a subset of {list(PFSA_PROTOTYPES)}")
    if "clip_text" not in cfg.compound.pfsa_prototypes:
        return None
    with torch.random.fork_rng():  # the run's own random draws stay as they were
        torch.manual_seed(cfg.seed)
        clip = create_clip(cfg.visual.backbone, cfg.visual.pretrained)
    clip.model.eval()
    return ZeroShotClip(clip.model, clip.tokenizer, CEXPR.basis.words,
                        CEXPR.words[:len(COMPOUND_EXPRESSIONS)]).text[:NUM_BASIC].double().numpy()


def truth_of(videos: Sequence[WindowedVideo]) -> dict[str, np.ndarray]:
    return {item.name: item.truth for item in videos}


def compound_f1(videos: Sequence[WindowedVideo], scores: np.ndarray) -> float:
    predictions = frame_predictions(videos, scores)
    names = [v.name for v in videos]
    return score_frames(
        np.concatenate([predictions[n] for n in names]), np.concatenate([truth_of(videos)[n] for n in names]),
        COMPOUND_EXPRESSIONS,
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
def mean_weights(module: MhpfModule, segments: Segments, k: int) -> np.ndarray:
    """[M, 8] effective modality weights of net k averaged over the segments (constant per presence pattern when
    static)."""
    rows = segments.present.all(axis=1)
    rows = rows if rows.any() else segments.present.any(axis=1)
    probs = torch.as_tensor(np.nan_to_num(segments.probs[rows], nan=0.0), dtype=torch.float32)
    weights, _ = module.bank.effective_weights(probs, torch.as_tensor(segments.present[rows]))
    return weights[k].mean(dim=0).numpy()


# --- the run ---------------------------------------------------------------------------------------------------------


def fusion_subsets(num_modalities: int, ablation: bool) -> list[tuple[int, ...]]:
    """The modality subsets to train a fusion for: all of them with two or more modalities for the ablation (one
    modality needs none: MHPF passes it through), else only the full set; the full set is always last."""
    if not ablation or num_modalities == 1:
        return [tuple(range(num_modalities))]
    return [s for size in range(2, num_modalities + 1) for s in itertools.combinations(range(num_modalities), size)]


def evaluate_subset(cfg: DictConfig, fused: np.ndarray, basic_fused: np.ndarray, labels: np.ndarray,
                    videos: Sequence[WindowedVideo], label_words: np.ndarray | None) -> dict[str, float]:
    """Compound macro-F1 of PPA and PFSA from one subset's fused probabilities of the compound windows and the
    basic training windows (PFSA's class-mean prototypes)."""
    known = ~np.isnan(basic_fused).any(axis=1)
    methods = compound_methods(fused, basic_fused[known], labels[known], cfg.compound, label_words)
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
    label_words = label_word_embeddings(cfg)
    root = resolve_root(cfg.data)
    videos = compound_videos(root, cfg.data)
    basic_sets = {name: BASIC_SETS[name](root, cfg.data, bool(cfg.visual.modalities)) for name in cfg.data.basic_sets}
    halves = ["cexpr", *basic_sets]
    texts = text_tables_of(root, halves, cfg.text.modalities)
    computed = computed_tables(cfg, root, {"cexpr": videos, **basic_sets}, texts)
    modalities = modality_names(root, cfg.data.modalities, [*cfg.visual.modalities, *texts], halves)
    compound_ids = [i for v in videos for i in v.ids()]
    compound = load_segments(table_paths(root, "cexpr", modalities, computed), compound_ids)
    parts = [
        load_segments(table_paths(root, name, modalities, computed), [i for v in vids for i in v.ids()])
        for name, vids in basic_sets.items()
    ]
    basic_all = Segments(
        tuple(i for part in parts for i in part.ids),
        np.concatenate([part.probs for part in parts]),
        np.concatenate([part.present for part in parts]),
    )
    basic, labels = basic_training_set([v for vids in basic_sets.values() for v in vids], basic_all)

    # kill -9 at any moment: resume=auto continues the newest intact checkpoint into its MLflow run (the tables above
    # are a cache, and the face models' training in it resumes by itself)
    resume, run_id, folder = resume_point(cfg.resume, Path(cfg.checkpoint_dir))
    logger = make_logger(cfg, run_id=run_id)
    if not run_id:
        logger.log_hyperparams(flatten(cfg) | {"modalities": ",".join(modalities)})
    subsets = fusion_subsets(len(modalities), cfg.ablation)
    module = fit_fusion(cfg, basic, labels, subsets, logger, folder, resume)
    client, run_id = logger.experiment, logger.run_id
    artifacts = Path(tempfile.mkdtemp(prefix="affectlab-cexpr-"))

    # the main method: all modalities fused (the last net), PPA and PFSA; their submission files are scored through
    # the file, as the challenge does
    compound_fused, basic_fused_all = fuse(module, compound), fuse(module, basic)
    fused, basic_fused = compound_fused[-1], basic_fused_all[-1]
    methods = compound_methods(fused, basic_fused, labels, cfg.compound, label_words)
    truth = truth_of(videos)
    metrics: dict[str, float] = {}
    for name, scores in methods.items():
        submission = write_submission(artifacts / f"submission_{name}.csv", frame_predictions(videos, scores),
                                      COMPOUND_EXPRESSIONS)
        score = score_submission(submission, truth, COMPOUND_EXPRESSIONS)
        metrics[f"compound_f1/fusion_{name}"] = score.macro_f1
        for cls, value in score.per_class_f1.items():
            if np.isfinite(value):
                client.log_metric(run_id, f"compound_f1_class/{name}/{cls.replace(' ', '_')}", value)
        client.log_artifact(run_id, str(submission))
    for weighted, mask in ((True, False), (False, True), (True, True)):  # PPA's options beside the configured one
        variant = ppa_scores(fused, PAIRS, weighted=weighted, mask=mask)
        metrics[f"compound_f1/fusion_ppa{'_weighted' * weighted}{'_masked' * mask}"] = compound_f1(videos, variant)
    metrics["basic_val_score/fusion"] = module.best_scores[-1]
    _, val = split_indices(len(labels), cfg.data.val_fraction, cfg.seed)
    metrics["basic_val_f1/fusion"] = basic_f1(basic_fused[val], labels[val])
    singles = {}
    for m, name in enumerate(modalities):  # every modality alone: basic F1 and compounds through the same PPA/PFSA
        metrics[f"basic_val_f1/{name}"] = basic_f1(basic.probs[val, m], labels[val])
        singles[(m,)] = evaluate_subset(cfg, compound.probs[:, m], basic.probs[:, m], labels, videos, label_words)
        for method, value in singles[(m,)].items():
            metrics[f"compound_f1/{name}_{method.split('/')[1]}"] = value
    for name, path in direct_compound_tables(root, modalities, computed).items():  # zero-shot CLIP's compound words
        table = read_modality_table(path, classes=CEXPR_COMPOUNDS)
        _, direct, _ = align_modality_tables([table], compound.ids)
        metrics[f"compound_f1/{name}_direct"] = compound_f1(videos, direct[:, 0])
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)

    weights_png = plot_weights(mean_weights(module, compound, len(subsets) - 1), modalities,
                               artifacts / "fusion_weights.png", title=f"MHPF ({cfg.fusion.kind}) modality weights")
    client.log_artifact(run_id, str(weights_png))
    config_file = artifacts / "config.yaml"
    OmegaConf.save(cfg, config_file)
    client.log_artifact(run_id, str(config_file))

    if cfg.ablation:
        fused_of = {subset: (compound_fused[k], basic_fused_all[k], module.best_scores[k])
                    for k, subset in enumerate(subsets)}
        ablation = log_ablation(cfg, modalities, fused_of, singles, labels, videos, label_words, client, logger)
        client.log_table(run_id, data=ablation, artifact_file="modality_ablation.json")
        _print_ablation(ablation)
    client.set_terminated(run_id)
    print_summary(metrics, title=f"C-EXPR-DB compound expressions (MLflow run {run_id})")
    return metrics


def log_ablation(cfg, modalities, fused_of, singles, labels, videos, label_words, client, logger) -> dict[str, list]:
    """Every non-empty subset of the modalities as a nested run; returns the summary table as columns."""
    methods = [key.split("/")[1] for key in singles[(0,)]]
    table: dict[str, list] = {"modalities": [], **{f"compound_f1_{m}": [] for m in methods}, "basic_val_score": []}
    for size in range(1, len(modalities) + 1):
        for subset in itertools.combinations(range(len(modalities)), size):
            names = [modalities[m] for m in subset]
            if size == 1:
                scores, basic_score = singles[subset], float("nan")
            else:
                compound_fused, basic_fused, basic_score = fused_of[subset]
                scores = evaluate_subset(cfg, compound_fused, basic_fused, labels, videos, label_words)
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
            for method in methods:
                table[f"compound_f1_{method}"].append(scores[f"compound_f1/{method}"])
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
