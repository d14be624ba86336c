"""The configuration of zero-shot compound expressions on C-EXPR-DB: every key, its default and meaning
(`python experiments/cexpr.py --help`).

Modality tables -> MHPF trained on basic expressions -> PPA and PFSA. The defaults run on the embedded synthetic data
in a few minutes on a CPU. For real data, point data.root at a folder with cexpr/{annotation,videos,tables,texts} and
affwild2/{EXPR,videos,tables,texts} (see affectlab.lab.cexpr.data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from affectlab.lab.config import CheckpointEvery, MlflowConfig, TrainerConfig, key, section


def _mhpf_kinds() -> list[str]:
    from affectlab.fusion import MHPF_KINDS

    return list(MHPF_KINDS)


def _mhpf_losses() -> list[str]:
    from affectlab.fusion import MHPF_LOSSES

    return list(MHPF_LOSSES)


def _mhpf_inits() -> list[str]:
    from affectlab.fusion import MHPF_INITS

    return list(MHPF_INITS)


@dataclass
class Synthetic:
    num_videos: int = key(8, "compound-expression videos", min=1)
    num_basic_videos: int = key(40, "AffWild2-like basic-expression videos", min=2)
    afew_clips_per_class: int = key(6, "AFEW-like clips per basic class", min=1)
    seconds: list[float] = key([16.0, 30.0], "each video's length is drawn from this range")
    fps: int = key(10, "frames per second", min=1)
    frame_size: int = key(64, "frame width and height in pixels", min=16)
    seed: int = key(0, "the generator's seed")
    texts: bool = key(False, "also write scene-description and transcript text tables (<half>/texts/*.csv)")


@dataclass
class Data:
    root: str | None = key(None, "null = the embedded synthetic set, generated once and cached")
    modalities: list[str] | None = key(None, "names to fuse; null = every table in all tables folders plus "
                                             "visual.modalities")
    basic_sets: list[Literal["affwild2", "afew"]] = key(["affwild2", "afew"], "the basic-expression data the fusion is "
                                                                             "trained on")
    basic_fps: float = key(10, "frame rate of the videos the AffWild2 label files describe (real AffWild2: 30)", min=1)
    window_s: float = key(4.0, "windows of this many seconds", min=0.1)
    hop_s: float = key(2.0, "... every this many seconds", min=0.1)
    min_last_s: float = key(1.0, "a last window shorter than this is dropped", min=0)
    val_fraction: float = key(0.2, "basic-expression windows held out for early stopping", min=0.01, max=0.9)
    batch_size: int = key(64, "MHPF's published batch size", min=1)
    train_samples_per_epoch: int | None = key(6400, "windows per epoch (whole shuffled passes); null = one pass", min=1)
    num_workers: int = key(0, "loader worker processes", min=0)
    synthetic: Synthetic = section(Synthetic, "the embedded synthetic set")


@dataclass
class Visual:
    modalities: list[Literal["zero_shot_clip", "static_face", "dynamic_face"]] = key(
        ["zero_shot_clip", "static_face", "dynamic_face"], "modalities computed from the frames, cached as tables "
                                                           "(a damaged table is recomputed); [] = only data.root's")
    backbone: str = key("affectlab-tiny", "CLIP of zero-shot matching and the dynamic face model: an open_clip name "
                                          "(ViT-B-32, ...); affectlab-tiny is a random CPU-sized CLIP")
    pretrained: str | None = key(None, "an open_clip tag or a weights file; null = random init (zero-shot is noise)")
    frames_per_window: int = key(20, "frames sampled uniformly inside each window", min=1)
    batch_size: int = key(16, "windows per forward pass", min=1)
    cache_dir: str = key("tables/cexpr", "where the computed tables are cached")


@dataclass
class StaticFace:
    backbone: str = key("test_resnet", "a per-frame timm classifier (resnet18, convnext_tiny, ...); test_resnet is "
                                       "timm's tiny test net")
    pretrained: bool = key(False, "timm's pretrained weights (downloaded)")
    epochs: int = key(10, "training epochs (3 left it near chance, held-out window accuracy 0.24; 10: 0.77)", min=1)
    lr: float = key(3e-3, "Adam's learning rate", min=0)
    batch_size: int = key(32, "windows per batch", min=1)


@dataclass
class DynamicFace:
    depth: int = key(1, "temporal transformer layers over the frames' CLIP embeddings (frozen encoder)", min=1)
    heads: int = key(4, "attention heads", min=1)
    standardize: bool = key(True, "z-score each embedding dimension (held-out window accuracy 0.22 without, 0.57 "
                                  "with, random tiny CLIP)")
    epochs: int = key(30, "training epochs", min=1)
    lr: float = key(1e-3, "Adam's learning rate", min=0)
    batch_size: int = key(32, "windows per batch", min=1)


@dataclass
class Face:
    folds: int = key(2, "cross-fitting: a basic window's probabilities come from the model not trained on its video",
                     min=2)
    frames_per_window: int = key(4, "of the window's sampled frames, the static model sees this many", min=1)
    image_size: int = key(32, "face image size (whole frames are used: crop faces beforehand on real data)", min=8)
    static: StaticFace = section(StaticFace, "a per-frame classifier, softmax averaged over the window")
    dynamic: DynamicFace = section(DynamicFace, "a temporal transformer over the frames' CLIP embeddings")


@dataclass
class Text:
    modalities: list[str] | None = key(None, "text tables <half>/texts/<modality>.csv classified into modality tables; "
                                             "null = every one all halves have; [] = none")
    classifier: str = key("j-hartmann/emotion-english-distilroberta-base", "any transformers sequence classifier: a "
                                                                           "Hub id or a folder")
    label_map: dict[str, str] = key({}, "classifier label -> basic emotion, for labels the built-in synonyms miss")
    batch_size: int = key(32, "texts per forward pass", min=1)
    max_length: int = key(64, "tokens", min=1)


@dataclass
class Fusion:
    kind: str = key("static", "static (learned W, g) | input_dependent (W, g from an MLP on the probabilities)",
                    choices=_mhpf_kinds)
    num_heads: int = key(3, "MHPF's heads", min=1)
    class_weighted: bool = key(True, "inverse-frequency class weights in the loss")
    loss: str = key("authors_ce", "authors_ce (the authors' cross-entropy of the fused output taken as logits) | "
                                  "renormalised_nll (a likelihood of the renormalised fused probabilities)",
                    choices=_mhpf_losses)
    init: str = key("authors", "authors (torch.rand weights and gate, as published) | small_random (randn x 0.01, "
                               "zero gate)", choices=_mhpf_inits)


@dataclass
class Compound:
    ppa_weighted: bool = key(False, "w_i = d_i / (d_i + d_j), d_e = 7 - compounds containing e")
    ppa_mask: bool = key(False, "zero basic probabilities below 1/7")
    pfsa_weighted: bool = key(False, "PPA's weights in PFSA's pairs")
    pfsa_temperature: float = key(0.1, "PFSA's softmax temperature", min=1e-6)
    pfsa_prototypes: list[Literal["class_means", "clip_text"]] = key(
        ["class_means", "clip_text"], "PFSA's basic-emotion prototypes, each reported: class_means (metric pfsa) and "
                                      "clip_text (CLIP text embeddings of the label words; metric pfsa_text)")


@dataclass
class Optim:
    lr: float = key(1e-4, "Adam, as published", min=0)


@dataclass
class EarlyStopping:
    patience: int = key(8, "epochs without a better mean of UAR, WAR, macro-F1 and weighted F1, for every net", min=1)


@dataclass
class Predict:
    model: str | None = key(None, "a checkpoint, an MLflow run id, runs:/<id>/model, models:/NAME/VERSION|ALIAS or a "
                                  "model folder; null: the newest version of affectlab-cexpr")
    input: str | None = key(None, "a video file or a folder of videos")
    output: str = key("predictions", "the folder predictions.csv (per frame) and submission.csv (ABAW) go to")


@dataclass
class CexprConfig:
    seed: int = key(0, "seed of every random draw")
    resume: str | None = key(None, "after a crash: auto (the newest intact checkpoint under checkpoint_dir) or a "
                                   "path; the run continues into the same MLflow run")
    checkpoint_dir: str = key("checkpoints/cexpr", "MHPF's checkpoints, a folder per run (the face models' are in "
                                                   "the table cache)")
    checkpoint_every: CheckpointEvery = section(CheckpointEvery, "mid-epoch checkpoints of MHPF and the face models")
    num_threads: int | None = key(None, "torch threads; null: the cores shared out", min=1)
    ablation: bool = key(True, "every non-empty subset of the modalities as a nested MLflow run, plus a summary table")
    data: Data = section(Data)
    visual: Visual = section(Visual)
    face: Face = section(Face)
    text: Text = section(Text)
    fusion: Fusion = section(Fusion)
    compound: Compound = section(Compound)
    optim: Optim = section(Optim)
    early_stopping: EarlyStopping = section(EarlyStopping)
    trainer: TrainerConfig = section(TrainerConfig, max_epochs=80, accelerator="cpu", log_every_n_steps=5)
    mlflow: MlflowConfig = section(MlflowConfig, experiment="cexpr")
    predict: Predict = section(Predict, "`predict`: your videos through the trained fusion (model=REF input=PATH are "
                                        "short for predict.model, predict.input)")


SCHEMA = CexprConfig
