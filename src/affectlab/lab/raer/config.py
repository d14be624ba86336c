"""The configuration of CLIP-CAER on RAER: every key, its default and meaning (`python experiments/raer.py --help`).

The defaults train a tiny CLIP on the embedded synthetic RAER in minutes on a CPU; `config=raer_paper` is the paper's
setting (ViT-B-32, 16 frames, SGD as published) for real RAER on a GPU, `config=raer_authors` the authors' weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from affectlab.lab.config import CheckpointEvery, MlflowConfig, TrainerConfig, key, section

CONTEXTS = ["Class/Classroom", "SelfStudy/Classroom", "SelfStudy/Laboratory", "SelfStudy/Library", "SelfStudy/Dormitory"]


def _nets() -> list[str]:
    from affectlab.lab.raer.nets import NETS

    return list(NETS)


def _losses() -> list[str]:
    from affectlab.models.losses import LOSSES

    return list(LOSSES)


def _optimizers() -> list[str]:
    from affectlab.lab.optim import OPTIMIZERS

    return list(OPTIMIZERS)


@dataclass
class Synthetic:
    num_train: int = key(250, "training clips of the embedded synthetic RAER (generated once and cached)", min=5)
    num_test: int = key(100, "test clips", min=5)
    num_frames: int = key(16, "frames per clip", min=1)
    seed: int = key(0, "the generator's seed")
    num_votes: int = key(10, "annotators per clip (votes on every annotation line); 1 = one label per line", min=1)
    video: bool = key(False, "true: each clip is one Motion-JPEG AVI instead of a folder of JPEG frames")


@dataclass
class Data:
    root: str | None = key(None, "RAER in its release layout (images/, annotation/, bounding_box/); null = synthetic")
    label_set: str = key("raer_five", "five | four (raer_five | raer_four) or the path of your own label set YAML")
    contexts: list[str] | None = key(CONTEXTS, "recording contexts (leading folders of a clip's path) for per-context "
                                               "test UAR/WAR; null turns them off")
    on_bad_clip: Literal["error", "skip"] = key("error", "a bad clip: error (naming it) | skip (left out, counted in "
                                                         "MLflow)")
    sampler: Literal["random", "class_balanced"] = key("random", "class_balanced: every class equally likely in each "
                                                                 "epoch's draw")
    video_reader: Literal["pyav", "decord"] = key("pyav", "video clips: pyav (decodes only the packets the sampled "
                                                          "frames need) | decord")
    crop_cache: str | None = key("auto", "face/context crops written by the `cache` command and read when complete: "
                                         "auto (<root>/crops/<S>px-margin<M>), a folder, or null")
    feature_cache: str | None = key("auto", "with model.freeze_image_encoder: per-frame image embeddings computed once "
                                            "(auto: <root>/features; a folder; null: encode each step)")
    num_segments: int = key(8, "T frames per clip, TSN-style (one per segment)", min=1)
    pixel_norm: Literal["clip", "unit"] = key("clip", "clip: (pixel/255 - CLIP's mean) / CLIP's std, as CLIP was "
                                                      "trained; unit: pixel/255 only, what the authors' released "
                                                      "weights were trained on (config=raer_authors)")
    face_margin: int = key(20, "px added around the face box on every side", min=0)
    val_fraction: float = key(0.15, "stratified validation split carved from train (test never selects)", min=0,
                              max=0.95)
    batch_size: int = key(8, "clips per batch", min=1)
    num_workers: int = key(2, "loader worker processes", min=0)
    synthetic: Synthetic = section(Synthetic, "the embedded default dataset")


@dataclass
class FormerDfer:
    backbone: str = key("test_resnet", "a timm model name; resnet18 in raer_paper.yaml")
    pretrained: str | None = key(None, "null (random init) or a local timm weights file")
    image_size: int = key(48, "input size of the backbone", min=8)


@dataclass
class Model:
    name: str = key("clip_caer", "clip_caer | former_dfer (facial-dynamics baseline: timm backbone + temporal "
                                 "transformer)", choices=_nets)
    loss: str = key("ce", "ce (majority label) | soft_ce (annotators' vote shares) | cb_ls (class-balanced weights "
                          "with label smoothing)", choices=_losses)
    label_smoothing: float = key(0.1, "cb_ls: label smoothing", min=0, max=1)
    cb_beta: float = key(0.999, "cb_ls: beta of the effective number of samples (Cui et al. 2019)", min=0, max=1)
    backbone: str = key("affectlab-tiny", "an open_clip model name: ViT-B-32, ViT-B-16, ... or affectlab-tiny (CPU)")
    pretrained: str | None = key(None, "an open_clip tag (openai, laion2b_s34b_b79k, ...) or a local weights file")
    quick_gelu: bool | None = key(None, "null follows the weights (true for OpenAI's); set only on purpose")
    streams: list[Literal["face", "context"]] = key(["face", "context"], "[face] is the DFER-CLIP setting")
    text: Literal["descriptors", "class_names"] = key("descriptors", "what the class prompts say after the context")
    n_ctx: int = key(8, "learnable context vectors per class (CoOp, class-specific)", min=0)
    learnable_ctx: bool = key(True, "false: the prompts are the class texts alone")
    temporal_depth: int = key(1, "layers of each temporal transformer", min=1)
    temporal_heads: int = key(8, "attention heads of each temporal transformer", min=1)
    temporal_mlp_dim: int | None = key(None, "feed-forward width of the temporal transformers; null = 4 x embedding",
                                       min=1)
    temporal_activation: Literal["gelu", "gelu_tanh"] = key("gelu", "gelu_tanh: what the authors' released "
                                                                    "checkpoint was trained with")
    checkpoint: str | None = key(None, "the authors' released CLIP-CAER state_dict (see config=raer_authors)")
    logit_scale: float = key(100.0, "1 / temperature", min=0)
    freeze_image_encoder: bool = key(False, "keep CLIP's image encoder frozen (then data.feature_cache applies)")
    former_dfer: FormerDfer = section(FormerDfer, "model.name=former_dfer only (with model.streams=[face])")


@dataclass
class LearningRates:
    temporal: float = key(1e-3, "temporal transformers", min=0)
    image_encoder: float = key(1e-3, "CLIP's image encoder", min=0)
    prompt: float = key(1e-3, "the learnable prompt context", min=0)
    projection: float = key(1e-3, "the projection after the streams", min=0)


@dataclass
class Optim:
    name: str = key("adamw", "sgd | adamw (the tiny CPU model learns with AdamW; the paper's SGD in raer_paper.yaml)",
                    choices=_optimizers)
    momentum: float = key(0.9, "sgd only", min=0, max=1)
    weight_decay: float = key(1e-4, "weight decay", min=0)
    lr: LearningRates = section(LearningRates, "learning rate per parameter group")
    milestones: list[int] = key([10, 15], "epochs at which the rate is multiplied by gamma")
    gamma: float = key(0.1, "the multi-step schedule's factor", min=0)


@dataclass
class Compare:
    seeds: list[int] = key([0, 1, 2], "seeds of every method")
    only: list[str] | None = key(None, "method names to run (e.g. [CLIP-CAER, Former-DFER]); null runs them all")
    methods: dict[str, list[str]] = key({
        "CLIP-CAER": [],
        "Face only": ["model.streams=[face]"],
        "Context only": ["model.streams=[context]"],
        "Class names": ["model.text=class_names"],
        "No learnable context": ["model.learnable_ctx=false"],
        "Former-DFER": ["model.name=former_dfer", "model.streams=[face]"],
    }, "method name -> the key=value overrides that make it (compare.methods.<name>=[...])")


@dataclass
class Predict:
    model: str | None = key(None, "a checkpoint (.ckpt), an MLflow run id, runs:/<id>/model, models:/NAME/VERSION|ALIAS "
                                  "or a model folder; null: the newest version of affectlab-raer (or, with "
                                  "model.checkpoint, the authors' weights)")
    input: str | None = key(None, "a video file, a folder of videos, or a RAER-layout folder (its annotated clips)")
    output: str = key("predictions", "the folder predictions.csv and the <video>.timeline.png figures go to")
    window_s: float = key(2.0, "window length in seconds (the model's frame count is sampled in each)", min=0.01)
    hop_s: float = key(1.0, "seconds between the starts of consecutive windows", min=0.01)
    whole_frame: bool = key(False, "no face detection: every frame is its own face crop and context")
    batch_size: int = key(16, "windows per forward pass", min=1)


@dataclass
class RaerConfig:
    seed: int = key(0, "seed of every random draw (weights, splits, sampling)")
    resume: str | None = key(None, "a checkpoint path, or auto for the newest intact checkpoint under checkpoint_dir")
    checkpoint_dir: str = key("checkpoints/raer", "where each run's checkpoints go (a folder per run)")
    checkpoint_every: CheckpointEvery = section(CheckpointEvery, "mid-epoch checkpoints, so that a crash costs minutes")
    num_threads: int | None = key(None, "torch threads per process; null: the cores shared among processes and loader "
                                        "workers", min=1)
    data: Data = section(Data)
    model: Model = section(Model)
    optim: Optim = section(Optim)
    trainer: TrainerConfig = section(TrainerConfig, max_epochs=20, accelerator="auto", log_every_n_steps=10)
    compare: Compare = section(Compare, "`compare`: every method x every seed, mean ± std table")
    mlflow: MlflowConfig = section(MlflowConfig, experiment="raer")
    predict: Predict = section(Predict, "`predict`: your videos through a trained model (model=REF input=PATH "
                                        "are short for predict.model, predict.input)")


SCHEMA = RaerConfig
