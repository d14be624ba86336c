"""The probing run, top to bottom:

    splits       train/validation/test of the corpus (`load_text_splits`), logged as the run's dataset inputs with
                 the report of what was read, merged and dropped
    run          the MLflow run opens (its folder's run.json names it: resume=auto continues it after a crash)
    features     every text's pooled hidden states at the chosen layers, extracted once into a sharded cache (each
                 rank its own shards; a run started again extracts only the shards still missing)
    probes       one per layer, trained to convergence and selected on the validation split: the linear probe by
                 L-BFGS (`train_probes`, rank 0), the MLP under the run spine's Trainer (checkpointed, resumable)
    report       on the test split (rank 0): per layer accuracy, macro-F1, weighted F1 with bootstrap intervals, the
                 projection on the emotion directions beside them, majority and TF-IDF baselines (nested runs too);
                 the best layer chosen on validation; the table, figures and the probes as a registered MLflow model
    studies      when enabled: trajectories, steering, zero-shot prompting, malleability, persistence
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from affectlab.datasets.text_splits import TextSplits
from affectlab.lab.checkpoints import check_checkpoint
from affectlab.lab.config import ConfigError
from affectlab.lab.probing.data import (
    ProbeData,
    ProbeFeatures,
    _world,
    build_extractor,
    extract_features,
    labels_of,
    load_splits,
    model_source,
    split_digest,
)
from affectlab.lab.probing.evaluation import (
    earlier_depth_curves,
    evaluate,
    figures,
    headline,
    layer_rows,
    summary_metrics,
    write_layer_table,
)
from affectlab.lab.probing.module import MlpProbes
from affectlab.lab.probing.predict import log_probe_model, write_probe_bundle
from affectlab.lab.probing.studies import (
    generative_model,
    malleability_study,
    persistence_study,
    steering_study,
    trajectories,
    zero_shot_baseline,
)
from affectlab.lab.report import print_table
from affectlab.lab.run import build_trainer, finish, fit_and_test, start
from affectlab.lab.sweep import Sweep
from affectlab.lab.tracking import log_dataset
from affectlab.probing import (
    METRICS,
    LayerProbes,
    emotion_directions,
    fit_projection,
    load_model,
    print_progress,
    train_probes,
)

GENERATING = ("zero_shot", "malleability", "persistence", "steering")  # stages that need the LM head
PROBE_FOLDER = "probes"  # the MLP's checkpoints, in the run's folder


def check_config(cfg: DictConfig, splits: TextSplits) -> None:
    """What the schema cannot say."""
    if splits.val is None:
        raise ConfigError("the probes are selected on a validation split and there is none: give data.val=<table> "
                          "or data.val_fraction > 0")
    if splits.multi_label:
        enabled = [stage for stage in ("zero_shot", "malleability", "persistence") if cfg[stage].enabled]
        if enabled:
            raise ConfigError(f"{enabled[0]}.enabled=true reads one emotion per text; data.multi_label=true gives "
                              "several (set data.multi_label=false)")


def log_splits(logger, splits: TextSplits, toy: bool, folder: Path) -> Path:
    """The splits as the run's dataset inputs, their report as a JSON artifact, and its counts as metrics."""
    report = splits.report
    for split, corpus in splits.splits().items():
        source = report["files"].get(split) or report["how"][split]
        log_dataset(logger, f"{report['source']}/{split}", str(source), len(corpus), context=split,
                    digest=split_digest(corpus), toy=toy)
    path = folder / "splits_report.json"
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    if logger is not None:
        client, run_id = logger.experiment, logger.run_id
        client.log_artifact(run_id, str(path))
        for split, counts in report["splits"].items():
            for name, value in counts.items():
                if isinstance(value, (int, float)):
                    client.log_metric(run_id, "data/" + f"{split}/{name}".replace(":", "/"), float(value))
        client.set_tag(run_id, "data.test_split", report["how"]["test"])
        if toy:
            client.set_tag(run_id, "toy_data", "true: the figures of this run mean nothing")
    return path


def train_mlp(cfg: DictConfig, sweep: Sweep, probes: LayerProbes, parts: dict, layers: list[int], record: dict):
    """The MLP probes under the run spine's Trainer, in this one process (rank 0): checkpoints at every epoch end
    (and mid-epoch), continued from the newest one when the run is resumed; every layer ends with the weights of
    its best epoch."""
    (train_x, train_y), (val_x, val_y) = parts["train"], parts["val"]
    module = MlpProbes(probes, val_x, val_y, lr=cfg.probe.lr, layers=layers, monitor=cfg.probe.monitor,
                       weight_decay=0.01 if cfg.probe.weight_decay is None else cfg.probe.weight_decay,
                       patience=cfg.probe.patience)
    data = ProbeData(ProbeFeatures(train_x, train_y), cfg.probe.batch_size, cfg.seed)
    checkpoint = sweep.continue_from(PROBE_FOLDER)
    check_checkpoint(checkpoint, record)
    if checkpoint:
        print(f"MLP probes: continuing from {checkpoint}", flush=True)
    # one device, whatever the launch: the probes of cached features train in minutes, on rank 0 alone
    single = {**OmegaConf.to_container(cfg.trainer, resolve=True), "devices": 1, "num_nodes": 1, "strategy": "auto"}
    trainer, _ = build_trainer(single, folder=sweep.child_folder(PROBE_FOLDER), logger=sweep.parent,
                               every=cfg.checkpoint_every, record=record)
    fit_and_test(trainer, None, module, data, checkpoint, test=False)
    module.restore_best()
    return module.training_record(int(cfg.trainer.max_epochs))


def train(cfg: DictConfig) -> dict[str, float]:
    """Splits, features, probes, report (and the studies enabled); returns the run's summary metrics (empty off
    rank 0)."""
    start(cfg)
    splits, toy = load_splits(cfg.data)
    check_config(cfg, splits)
    classes = list(splits.classes)
    sweep = Sweep.open(cfg)
    logger = sweep.parent
    with tempfile.TemporaryDirectory(prefix="affectlab-probing-") as temporary:  # removed once its files are logged
        scratch = Path(temporary)
        rank, _ = _world()
        if rank == 0:
            print(splits.describe(), flush=True)
        artifacts = [log_splits(logger if not sweep.resumed else None, splits, toy, scratch)]

        corpora = splits.splits()
        texts = list(dict.fromkeys(text for corpus in corpora.values() for text in corpus.texts))
        features, layers, info = extract_features(cfg, texts)
        if rank != 0:  # this process extracted its shards; the probes train and report on rank 0
            return {}
        row_of = {text: row for row, text in enumerate(texts)}
        parts = {split: (features[:, [row_of[t] for t in corpus.texts]], labels_of(corpus))
                 for split, corpus in corpora.items()}
        if logger is not None:
            for name, value in (("model.pooling_resolved", info["pooling"]), ("model.layers_resolved", layers),
                                ("model.revision_resolved", info["revision"])):
                logger.experiment.log_param(logger.run_id, name, value)
        torch.manual_seed(cfg.seed)  # the probes' initial weights, whatever loading the model drew before
        probes = LayerProbes(len(layers), info["hidden_size"], len(classes), kind=cfg.probe.kind, width=cfg.probe.width)
        if cfg.probe.kind == "linear":
            training = train_probes(probes, *parts["train"], *parts["val"], max_epochs=cfg.probe.max_evaluations,
                                    weight_decay=cfg.probe.weight_decay, monitor=cfg.probe.monitor, seed=cfg.seed,
                                    progress=print_progress)
        else:
            probes.fit_standardisation(parts["train"][0])
            record = {"experiment": "probing", "classes": classes, "config": OmegaConf.to_container(cfg, resolve=True),
                      "architecture": {"kind": "mlp", "width": cfg.probe.width, "layers": layers,
                                       "hidden_size": info["hidden_size"], "num_classes": len(classes),
                                       "model": str(cfg.model.name), "pooling": info["pooling"]}}
            training = train_mlp(cfg, sweep, probes, parts, layers, record)

        corpus_texts = {split: corpus.texts for split, corpus in corpora.items()}
        projection = fit_projection(parts["train"][0], parts["train"][1], len(classes))
        natural = None if splits.multi_label else list(splits.natural_train_counts().values())
        report = evaluate(probes, projection, parts, corpus_texts, layers, info["num_layers"], classes, training,
                          cfg.report, cfg.seed, train_counts=natural)
        summary = summary_metrics(report)
        summary.update({"train_examples": float(len(splits.train)), "val_examples": float(len(splits.val))})
        name, corpus_name = str(cfg.model.name), f"{splits.report['source']} ({splits.report['labels']})"
        if toy:
            corpus_name += ", TOY"

        study_metrics, study_artifacts = run_studies(cfg, splits, parts, probes, projection, report, info, scratch)
        summary.update(study_metrics)
        artifacts += study_artifacts

        bundle = write_probe_bundle(scratch / "bundle", cfg, probes, classes, layers, info, report.best_layer,
                                    splits.multi_label)
        log_probe_model(logger, bundle, splits.test.texts[:2])
        earlier = {}
        if logger is not None:
            earlier = earlier_depth_curves(logger.experiment, logger.experiment_id, logger.run_id, cfg)
        rows = layer_rows(report)
        artifacts += [write_layer_table(rows, scratch / "layers.csv"), *figures(report, scratch, name, corpus_name, earlier)]
        print_table(layer_columns(rows, report.metric),
                    f"{name} on {corpus_name}: test split ({len(splits.test)} texts), {report.probes.confidence:.0%} "
                    f"intervals; best layer {report.best_layer} by validation {report.metric}")
        extraction = {f"extraction/{k}": float(v) for k, v in info.items() if isinstance(v, (int, float))}
        finish(cfg, logger, f"Probing {name} on {corpus_name}", headline(summary, report.metric), artifacts=artifacts,
               metrics={**summary, **extraction})
        if logger is not None:
            for baseline, scores in report.baselines.items():
                sweep.log_child(baseline, {"baseline": baseline}, {f"test/{m}{s}": v for m in METRICS for s, v in
                                                                   zip(("", "_low", "_high"), scores.interval(m))})
        sweep.finish({}, tables={"layers.json": {c: [row[c] for row in rows] for c in rows[0]}})
        return summary


def layer_columns(rows: list[dict], metric: str) -> dict[str, list]:
    """The per-layer table as printed: each metric with its interval in one cell."""
    columns: dict[str, list] = {"layer": [row["layer"] for row in rows]}
    for name in METRICS:
        columns[name] = [f"{row[name]:.3f} [{row[name + '_low']:.3f}, {row[name + '_high']:.3f}]" for row in rows]
    columns[f"val {metric}"] = [f"{row['val_' + metric]:.3f}" for row in rows]
    columns[f"projection {metric}"] = [f"{row['projection_' + metric]:.3f}" for row in rows]
    columns["best epoch"] = [row["best_epoch"] for row in rows]
    return columns


def run_studies(cfg, splits: TextSplits, parts: dict, probes, projection, report, info: dict, folder: Path):
    """The studies that are enabled, on rank 0; returns their metrics and artifacts."""
    metrics, artifacts = {}, []
    classes, layers = list(splits.classes), report.layers
    if cfg.directions.trajectory_texts:
        model, tokenizer = load_model(model_source(str(cfg.model.name)), revision=cfg.model.revision)
        extractor = build_extractor(cfg.model, model, tokenizer, layers=layers)
        artifacts += trajectories(cfg, extractor, projection, classes, report.best_layer, folder)
    generating = [stage for stage in GENERATING if cfg[stage].enabled]
    if not generating:
        return metrics, artifacts
    lm = generative_model(cfg, generating[0])  # the model with its LM head, loaded once for every study
    if cfg.steering.enabled:
        directions = emotion_directions(parts["train"][0], parts["train"][1], len(classes))
        found, paths = steering_study(cfg, lm, directions, layers, info["num_layers"], classes, splits.test.texts,
                                      folder)
        metrics.update(found)
        artifacts += paths
    if cfg.zero_shot.enabled:
        metrics.update(zero_shot_baseline(cfg, lm, splits.test))
    if cfg.malleability.enabled:
        found, path = malleability_study(cfg, lm, splits.test, probes, layers, report.best, folder)
        metrics.update(found)
        artifacts.append(path)
    if cfg.persistence.enabled:
        found, paths = persistence_study(cfg, lm, splits.train, splits.test, folder)
        metrics.update(found)
        artifacts += paths
    return metrics, artifacts
