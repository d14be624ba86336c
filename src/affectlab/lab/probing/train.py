"""The probing run, top to bottom: the corpus and the paper's split -> features of every text at the chosen layers
(extracted once, cached) -> the probes of all layers trained together through the run spine -> per-layer accuracy,
macro-F1 and confusion matrices on the test set -> the paper's other experiments when enabled -> figures, a per-layer
table and a summary, logged to MLflow."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from omegaconf import DictConfig

from affectlab.datasets.emotion_corpus import EMOTIONS, paper_split
from affectlab.lab.config import flatten
from affectlab.lab.probing.data import ProbeData, ProbeFeatures, _world, extract_features, load_emotion_corpus
from affectlab.lab.probing.module import ProbeModule
from affectlab.lab.probing.studies import (
    generative_model,
    malleability_study,
    persistence_study,
    zero_shot_baseline,
)
from affectlab.lab.report import plot_confusion
from affectlab.lab.run import finish, train as run_train
from affectlab.probing import LayerProbes, plot_accuracy_by_depth, plot_probe_pca


def write_layer_table(results: list[dict], num_layers: int, path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["layer", "depth", "accuracy", "f1_macro"])
        for row in results:
            writer.writerow([row["layer"], f"{row['layer'] / num_layers:.3f}", f"{row['accuracy']:.4f}",
                             f"{row['f1_macro']:.4f}"])
    return path


def train(cfg: DictConfig) -> dict[str, float]:
    """Extract (or reuse) features, train every layer's probe, test them; returns the summary metrics."""
    found: dict = {}

    def build() -> tuple[ProbeModule, ProbeData]:
        corpus = load_emotion_corpus(cfg.data)
        train, test = paper_split(corpus, test_fraction=cfg.data.test_fraction, seed=cfg.data.seed)
        row_of = {text: row for row, text in enumerate(corpus.texts)}  # texts are unique after the corpus filters
        features, layers, info = extract_features(cfg, corpus.texts)
        probes = LayerProbes(len(layers), features.shape[2], len(EMOTIONS), kind=cfg.probe.kind,
                             width=cfg.probe.width)
        train_rows = [row_of[t] for t in train.texts]
        probes.fit_standardisation(features[:, train_rows])
        train_set = ProbeFeatures(features, train_rows, train.labels)
        test_set = ProbeFeatures(features, [row_of[t] for t in test.texts], test.labels)
        _, world = _world()
        steps = cfg.trainer.max_epochs * -(-len(train_set) // (cfg.probe.batch_size * world))
        found.update(corpus=corpus, train=train, test=test, layers=layers, info=info, probes=probes)
        return ProbeModule(probes, layers, cfg.probe.optim, steps), ProbeData(train_set, test_set,
                                                                                cfg.probe.batch_size, cfg.seed)

    # after a crash (resume=auto): the newest intact checkpoint, continued into its MLflow run
    outcome = run_train(cfg, build)
    module, corpus, train, test, layers, info = (outcome.module, found["corpus"], found["train"], found["test"],
                                                 found["layers"], found["info"])
    num_layers = info["num_layers"]
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
    if outcome.is_main:
        folder = outcome.artifacts
        artifacts = []
        generating = [stage for stage in ("zero_shot", "malleability", "persistence") if cfg[stage].enabled]
        if generating:  # the paper's other experiments need the model with its LM head: loaded once for all
            lm = generative_model(cfg, generating[0])
        if cfg.zero_shot.enabled:
            summary.update(zero_shot_baseline(cfg, lm, test))
        if cfg.malleability.enabled:
            metrics, path = malleability_study(cfg, lm, test, found["probes"], layers, results.index(best), folder)
            summary.update(metrics)
            artifacts.append(path)
        if cfg.persistence.enabled:
            metrics, paths = persistence_study(cfg, lm, train, test, folder)
            summary.update(metrics)
            artifacts.extend(paths)
        _report(cfg, outcome.logger, module, results, best, num_layers, corpus, info, summary, folder, artifacts)
    return summary


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
    counts = {key.replace(":", "_"): float(value)
              for key, value in {**{f"corpus/{k}": v for k, v in corpus.report.items()}, **info}.items()
              if isinstance(value, (int, float))}
    finish(cfg, logger, f"Probing {name} on {corpus.name}", summary, artifacts=artifacts,
           metrics={**counts, **{f"summary/{key}": value for key, value in summary.items()}})
