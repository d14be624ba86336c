"""The modalities the cexpr run computes itself, cached as modality tables: zero-shot CLIP on the window frames, a
static and a dynamic face model trained here on the basic-expression windows (cross-fitted, so that a basic window's
probabilities come from a model not trained on its video), and text classifiers on given text tables.

Crash and resume: the face models train one stage per fold, checkpointed while training and their predictions kept
when done (`save_stage`), so a run killed here picks up at its last checkpoint when started again.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import TensorDataset

from affectlab.datasets.cexpr import read_frames, sample_frames, video_info
from affectlab.datasets.errors import DatasetError
from affectlab.datasets.integrity import file_record, keyed_folder, matches, write_atomic
from affectlab.datasets.modality_tables import cached_table_ok, read_text_table, write_cached_table
from affectlab.lab.checkpoints import load_checkpoint, newest_intact, read_record, record_path
from affectlab.lab.resumable import ResumableDataLoader
from affectlab.lab.cexpr.data import (
    BASIC_EMOTIONS,
    COMPOUND_EXPRESSIONS,
    NUM_BASIC,
    WindowedVideo,
    window_majority,
    zero_shot_clip,
)
from affectlab.lab.config import ConfigError
from affectlab.lab.run import build_trainer
from affectlab.models.clip import create_clip
from affectlab.models.face_expression import StaticFaceExpression, TemporalEmotionHead
from affectlab.models.text_emotion import load_text_emotion_classifier

VISUAL_MODALITIES = ("zero_shot_clip", "static_face", "dynamic_face")
COMPOUND_TABLES = "compound"  # <tables>/compound/<modality>.csv: a modality's direct compound predictions
MODELS = "models"  # <tables>/models/<modality>.pt: the trained visual models (and clip.pt, the CLIP they read)


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
    trainer, _ = build_trainer({"max_epochs": spec.epochs, "accelerator": "cpu", "devices": 1,
                                "enable_progress_bar": False, "enable_model_summary": False},
                               folder=folder / "ckpt", every=every)
    resume = newest_intact(folder)
    trainer.fit(FaceModule(net, spec.lr), train_dataloaders=loader, ckpt_path=str(resume) if resume else None)
    return net.eval()


def save_stage(path: Path, value: dict[str, np.ndarray], state: dict[str, torch.Tensor] | None = None) -> None:
    """A finished stage's result ({half: probabilities}) and its model's weights, written atomically with a
    size/SHA-256 record beside it."""
    tensors = {half: torch.from_numpy(np.ascontiguousarray(probs)) for half, probs in value.items()}
    stored = {"probs": tensors, "state": {k: v.detach().cpu() for k, v in (state or {}).items()}}
    write_atomic(path, lambda scratch: torch.save(stored, scratch))
    record = json.dumps(file_record(path))
    write_atomic(record_path(path), lambda scratch: scratch.write_text(record, encoding="utf-8"))


def load_stage(path: Path):
    """The result `save_stage` wrote at `path`, or None when it is absent or damaged (the stage then runs again).
    Read with weights_only: a stage holds tensors in a dict, nothing that runs code."""
    if not matches(path, read_record(path)):
        return None
    stored = load_checkpoint(path)
    if "probs" not in stored:  # a stage of an older layout: run it again
        return None
    return {half: probs.numpy() for half, probs in stored["probs"].items()}, stored["state"]


@torch.no_grad()
def predict_in_batches(net: torch.nn.Module, inputs: torch.Tensor, batch_size: int) -> np.ndarray:
    return torch.cat([net(inputs[s : s + batch_size]) for s in range(0, len(inputs), batch_size)]).double().numpy()


def cross_fitted(make, inputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], folds: dict[str, np.ndarray],
                 num_folds: int, spec: DictConfig, batch_size: int, folder: Path, seed: int,
                 every: DictConfig | None = None) -> dict[str, np.ndarray]:
    """Probabilities [N, 8] of every half (and each fold model's weights) from face models trained on the basic halves,
    cross-fitted: a basic window's
    come from the model whose training folds exclude its video (so the fusion learns how far to trust the model on
    windows it has not seen); the compound videos' are the mean over the fold models.

    Each fold is a stage of its own in `folder`: seeded by (seed, fold) alone, checkpointed while it trains, its
    predictions kept once it is done; so a run killed at any moment and run again gives the same probabilities."""
    basic = [half for half in inputs if half != "cexpr"]
    out = {half: np.zeros((len(inputs[half]), NUM_BASIC)) for half in inputs}
    states = []
    labelled = {half: (targets[half] >= 0).reshape(len(targets[half]), -1).any(dim=1) for half in basic}
    for fold in range(num_folds):
        done = folder / f"fold{fold}.pt"
        stage = load_stage(done)
        predicted, state = stage if stage is not None else (None, None)
        if predicted is None:
            torch.manual_seed(seed * 1000 + fold)
            train = {half: torch.as_tensor(folds[half] != fold) & labelled[half] for half in basic}
            net = train_face_model(make(), torch.cat([inputs[h][train[h]] for h in basic]),
                                   torch.cat([targets[h][train[h]] for h in basic]), spec, folder / f"fold{fold}",
                                   every)
            predicted = {half: predict_in_batches(net, inputs[half][folds[half] == fold], batch_size) for half in basic}
            predicted["cexpr"] = predict_in_batches(net, inputs["cexpr"], batch_size)
            state = net.state_dict()
            save_stage(done, predicted, state)
        for half in basic:
            out[half][folds[half] == fold] = predicted[half]
        out["cexpr"] += predicted["cexpr"] / num_folds
        states.append(state)
    return out, states


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
    folder = keyed_folder(visual.cache_dir, {
        "root": str(root.resolve()), "visual": OmegaConf.to_container(visual), "face": OmegaConf.to_container(cfg.face),
        "text": OmegaConf.to_container(cfg.text), "data": OmegaConf.to_container(cfg.data), "seed": cfg.seed,
        "texts": sources,
    })
    ids = {half: [i for v in videos for i in v.ids()] for half, videos in halves.items()}

    def files(name: str) -> list[Path]:
        direct = [folder / "cexpr" / COMPOUND_TABLES / f"{name}.csv"] if name == "zero_shot_clip" else []
        return [folder / half / f"{name}.csv" for half in halves] + direct

    def models_kept(name: str) -> bool:  # a cache from before the models were kept computes them again
        return name not in VISUAL_MODALITIES or all((folder / MODELS / f"{n}.pt").is_file()
                                                     for n in ("clip", name) if n != "zero_shot_clip")

    stale = [name for name in (*visual.modalities, *texts)
             if not all(cached_table_ok(f) for f in files(name)) or not models_kept(name)]
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
    models: dict[str, dict] = {"clip": {"backbone": cfg.visual.backbone, "pretrained": cfg.visual.pretrained,
                                        "state": clip.model.state_dict() if cfg.visual.pretrained is None else {}}}
    if "zero_shot_clip" in names:
        zero_shot = zero_shot_clip(clip)
        pairs = {half: zero_shot.from_embeddings(item.embeddings) for half, item in frames.items()}
        tables["zero_shot_clip"] = {half: basic.double().numpy() for half, (basic, _) in pairs.items()}
        write_cached_table(folder / "cexpr" / COMPOUND_TABLES / "zero_shot_clip.csv", ids["cexpr"],
                           pairs["cexpr"][1].double().numpy(), COMPOUND_EXPRESSIONS)
    if "dynamic_face" in names:
        spec = cfg.face.dynamic
        dim = frames["cexpr"].embeddings.shape[-1]
        embeddings = {half: item.embeddings for half, item in frames.items()}
        # z-scored per dimension with the basic halves' frames (no labels read): a frozen CLIP's embeddings of faces all
        # point nearly the same way (mean cosine 0.94 between windows for the random tiny CLIP), so the expression
        # differences are a sliver of each vector that the temporal head cannot find without this
        basis = torch.cat([embeddings[half].flatten(0, 1) for half in embeddings if half != "cexpr"])
        mean, std = basis.mean(dim=0), basis.std(dim=0).clamp_min(1e-6)
        if spec.standardize:
            embeddings = {half: (values - mean) / std for half, values in embeddings.items()}
        tables["dynamic_face"], states = cross_fitted(
            lambda: TemporalEmotionHead(dim, cfg.visual.frames_per_window, NUM_BASIC, spec.depth, spec.heads),
            embeddings, labels, folds, cfg.face.folds, spec, cfg.visual.batch_size,
            folder / "training" / "dynamic_face", cfg.seed, cfg.checkpoint_every,
        )
        models["dynamic_face"] = {"folds": states, "dim": dim, "mean": mean if spec.standardize else None,
                                  "std": std if spec.standardize else None}
    if "static_face" in names:
        spec = cfg.face.static
        tables["static_face"], states = cross_fitted(
            lambda: StaticFaceExpression(NUM_BASIC, spec.backbone, pretrained=spec.pretrained),
            {half: item.faces for half, item in frames.items()},
            {half: torch.as_tensor(item.face_labels) for half, item in frames.items()}, folds, cfg.face.folds, spec,
            cfg.visual.batch_size, folder / "training" / "static_face", cfg.seed, cfg.checkpoint_every,
        )
        models["static_face"] = {"folds": states}
    for name, model in models.items():  # what predict on a new video needs (affectlab.lab.cexpr.predict)
        write_atomic(folder / MODELS / f"{name}.pt", lambda scratch, model=model: torch.save(model, scratch))
    for name, by_half in tables.items():
        for half, probs in by_half.items():
            write_cached_table(folder / half / f"{name}.csv", ids[half], probs)
    shutil.rmtree(folder / "training", ignore_errors=True)  # the face models' stages: their tables are written


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
