"""The MELD experiment's run, top to bottom: data (MELD utterances, C-EXPR-DB fold clips, their cue tables) -> items
-> every training (MELD; C-EXPR-DB's 5 folds without and with Other) as a nested MLflow run of one sweep (resumable:
finished trainings are not run again) -> mean ± std per setting in the parent run, a summary table and figure."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from torchmetrics.functional.classification import multiclass_f1_score

from affectlab.datasets.cexpr import CEXPR_CLASSES, OTHER
from affectlab.datasets.emotion_corpus import EMOTIONS
from affectlab.fusion.textualize import CueTables
from affectlab.lab.config import ConfigError
from affectlab.lab.meld import data as meld_data
from affectlab.lab.meld.data import (
    ClipVectors,
    Items,
    PromptDataModule,
    Sample,
    _folder,
    build_items,
    cexpr_fold,
    cue_tables,
    embed_transcripts,
    feature_sizes,
    log_meld_splits,
    meld_clip_vectors,
    meld_splits,
)
from affectlab.lab.meld.module import EmotionModule, build_net
from affectlab.lab.meld.predict import MODEL_TRAINING, export
from affectlab.lab.report import plot_confusion, print_table
from affectlab.lab.run import build_trainer, fit_and_test, start
from affectlab.lab.sweep import Sweep
from affectlab.models.text_classifier import create_text_classifier


def train_one(cfg: DictConfig, approach: str, data: PromptDataModule, num_classes: int,
              feature_sizes: dict[str, int], run_name: str, sweep: Sweep,
              max_epochs: int | None = None) -> tuple[dict[str, float], np.ndarray]:
    """Train one model for ``max_epochs`` (None: ``trainer.max_epochs``) and test its best epoch on the validation split
    (``select``; null: the last epoch), as a nested MLflow run of
    the sweep; a training tested before a crash is not run again, one cut short continues from its checkpoint into its
    MLflow run. Returns the test metrics and confusion matrix."""
    done = sweep.result(run_name)
    if done is not None:
        return done["metrics"], np.asarray(done["confusion"])
    checkpoint = sweep.continue_from(run_name)
    L.seed_everything(cfg.seed, workers=True)
    net = build_net(cfg, approach, num_classes, feature_sizes)
    lr = cfg.optim.lr_features if approach == "features" else cfg.optim.lr_text
    module = EmotionModule(net, approach, num_classes, lr, cfg.optim.weight_decay, cfg.optim.warmup)
    logger = sweep.child_logger(run_name, checkpoint)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if max_epochs is not None:
        trainer_cfg["max_epochs"] = max_epochs
    # the epoch is chosen on validation (dev for MELD, a fold's val part for C-EXPR-DB), never on test
    trainer, best = build_trainer(trainer_cfg, folder=sweep.child_folder(run_name), logger=logger,
                                  every=cfg.checkpoint_every, monitor=cfg.select)
    if checkpoint:
        print(f"{run_name}: continuing from {checkpoint}", flush=True)
    metrics, chosen = fit_and_test(trainer, best, module, data, checkpoint)  # the test loads the best epoch's weights
    if chosen and logger is not None and trainer.is_global_zero:
        epoch = int(Path(chosen).stem.split("=")[-1].split("-")[0])  # best-epoch=02.ckpt (build_trainer's name)
        logger.experiment.set_tag(logger.run_id, "selected_epoch", f"{epoch} (best {cfg.select}, 0-based)")
    if trainer.is_global_zero:
        sweep.save_result(run_name, {"metrics": metrics, "confusion": module.confusion.tolist()})
        if run_name == MODEL_TRAINING:  # the words alone on MELD: the model users can apply to their texts
            export(sweep, run_name, cfg, module.net, list(EMOTIONS))
    return metrics, module.confusion


def majority_f1(train: Items, test: Items, num_classes: int) -> dict[str, float]:
    """The baseline that always predicts the most frequent training class."""
    majority = Counter(train.labels).most_common(1)[0][0]
    labels = torch.tensor(test.labels)
    preds = torch.full_like(labels, majority)
    return {f"test/f1_{avg}": float(multiclass_f1_score(preds, labels, num_classes, average=avg))
            for avg in ("weighted", "macro")}


def check_config(cfg: DictConfig) -> None:
    """What the schema cannot say: the lists that must not be empty, the fold numbers."""
    for key in ("tasks", "approaches", "prompt.modalities", "model.features.modalities"):
        if not OmegaConf.select(cfg, key):
            raise ConfigError(f"{key}=[]: expected at least one")
    bad = [k for k in cfg.data.cexpr.folds if k not in range(5)]
    if bad:
        raise ConfigError(f"data.cexpr.folds has {bad}; expected fold numbers 0..4")


def run_setting(cfg: DictConfig, setting: str, splits: dict[str, list[Sample]], class_names: Sequence[str],
                tables: CueTables, encoder, sweep: Sweep, run_prefix: str, artifacts: Path,
                clips: ClipVectors | None = None, max_epochs: int | None = None) -> dict[str, dict[str, float]]:
    """Both approaches (and the majority baseline) on one split set; returns {approach: test metrics}."""
    every = [s for part in splits.values() for s in part]
    if encoder is not None:
        text_features = embed_transcripts(encoder, tables, every, cfg.data.batch_size)
    else:  # the text approach alone reads no feature vectors
        text_features = {s.segment: np.zeros(1) for s in every}
    items = {part: build_items(samples, tables, text_features, cfg, clips) for part, samples in splits.items()}
    sizes = feature_sizes(cfg, text_features, tables, clips)  # the feature model's tokens, in the items' order
    data = PromptDataModule(items["train"], items["val"], items["test"], cfg.data.batch_size, cfg.data.num_workers,
                            cfg.seed)
    results = {"majority": majority_f1(items["train"], items["test"], len(class_names))}
    for approach in cfg.approaches:
        metrics, confusion = train_one(cfg, approach, data, len(class_names), sizes, f"{run_prefix}/{approach}",
                                       sweep, max_epochs)
        results[approach] = metrics
        if sweep.parent is not None and setting == "meld":
            png = plot_confusion(confusion, class_names, artifacts / f"confusion_meld_{approach}.png",
                                 title=f"MELD's test split, {approach}")
            sweep.parent.experiment.log_artifact(sweep.parent.run_id, str(png))
    return results


SETTINGS = {"meld": "MELD (7 emotions)", "cexpr_without_other": "C-EXPR-DB, 7 compounds",
            "cexpr_with_other": "C-EXPR-DB, 7 compounds + Other"}


def train(cfg: DictConfig) -> dict[str, float]:
    """Train and test both approaches in every configured setting; returns the parent run's summary metrics
    (``<setting>/<approach>/f1_weighted`` and ``f1_macro``, with ``_std`` over C-EXPR-DB's folds)."""
    check_config(cfg)
    start(cfg, cfg.data.num_workers)
    sweep = Sweep.open(cfg)
    parent = sweep.parent
    with tempfile.TemporaryDirectory(prefix="affectlab-meld-") as temporary:  # removed once its files are logged
        scratch = Path(temporary)
        text_spec = cfg.model.text
        encoder = None
        if "features" in cfg.approaches:  # frozen: the feature model's text token
            encoder = create_text_classifier(
                text_spec.name, 2, max_length=text_spec.max_length,
                random_config=OmegaConf.to_container(text_spec.random_config) if text_spec.random_config else None,
                pooling=text_spec.pooling,
            ).eval()

        per_setting: dict[str, list[dict[str, dict[str, float]]]] = {}
        if "meld" in cfg.tasks:
            meld = meld_splits(cfg)  # train; dev validates and test reports, or dev reports without a test file
            if not sweep.resumed:
                log_meld_splits(parent, meld)
            tables = cue_tables(cfg, "meld", meld.every(), len(EMOTIONS), scratch)
            clips = meld_clip_vectors(cfg, meld.every(), parent) if "features" in cfg.approaches else None
            per_setting["meld"] = [run_setting(cfg, "meld", meld.parts(), EMOTIONS, tables, encoder, sweep, "meld",
                                               scratch, clips)]
        if "cexpr" in cfg.tasks:
            shared = meld_data.SHARED_DATA  # read when the run starts (a test may point it elsewhere)
            folds_dir = _folder(cfg.data.cexpr.folds_dir, shared / "cexpr" / "folds")
            annotation_dir = _folder(cfg.data.cexpr.annotation_dir, shared / "cexpr" / "annotation")
            if folds_dir is None:
                rank_zero_warn(f"{shared / 'cexpr' / 'folds'} is absent: C-EXPR-DB is skipped "
                               "(data.cexpr.folds_dir=<folder> to fix)")
            for other in (cfg.data.cexpr.other if folds_dir is not None else []):
                setting = "cexpr_with_other" if other else "cexpr_without_other"
                classes = CEXPR_CLASSES if other else CEXPR_CLASSES[:OTHER]
                folds = {k: cexpr_fold(folds_dir, annotation_dir, k, other) for k in cfg.data.cexpr.folds}
                every = [s for fold in folds.values() for part in fold.values() for s in part]
                tables = cue_tables(cfg, "cexpr", every, len(CEXPR_CLASSES), scratch / setting)
                per_setting[setting] = [run_setting(cfg, setting, fold, classes, tables, encoder, sweep,
                                                    f"{setting}/fold{k}", scratch, max_epochs=cfg.data.cexpr.max_epochs)
                                        for k, fold in folds.items()]

        if not per_setting:
            raise ConfigError(f"tasks={list(cfg.tasks)}: nothing to run (no MELD task and no C-EXPR-DB folds found)")
        summary = summarise(per_setting)
        if parent is not None:
            table = summary_table(per_setting)
            config_file = scratch / "config.yaml"
            OmegaConf.save(cfg, config_file)
            sweep.finish(summary, [plot_summary(per_setting, scratch / "summary.png"), config_file],
                         tables={"summary.json": table})
            print_table(table, f"weighted / macro F1 on the test part (MLflow run {parent.run_id}, experiment "
                               f"{cfg.mlflow.experiment})")
        return summary


def _stats(runs: list[dict[str, dict[str, float]]], approach: str, metric: str) -> tuple[float, float]:
    values = np.array([r[approach][f"test/{metric}"] for r in runs])
    return float(values.mean()), float(values.std())  # population std over the folds


def summarise(per_setting: dict[str, list[dict]]) -> dict[str, float]:
    summary = {}
    for setting, runs in per_setting.items():
        for approach in runs[0]:
            for metric in ("f1_weighted", "f1_macro"):
                mean, std = _stats(runs, approach, metric)
                summary[f"{setting}/{approach}/{metric}"] = mean
                if len(runs) > 1:
                    summary[f"{setting}/{approach}/{metric}_std"] = std
    return summary


def summary_table(per_setting: dict[str, list[dict]]) -> dict[str, list]:
    """Columns: setting, approach, runs (folds), weighted F1 and macro F1 as "mean ± std"."""
    table: dict[str, list] = {"setting": [], "approach": [], "runs": [], "f1_weighted": [], "f1_macro": []}
    for setting, runs in per_setting.items():
        for approach in runs[0]:
            table["setting"].append(SETTINGS[setting])
            table["approach"].append(approach)
            table["runs"].append(len(runs))
            for metric in ("f1_weighted", "f1_macro"):
                mean, std = _stats(runs, approach, metric)
                table[metric].append(f"{mean:.4f} ± {std:.4f}" if len(runs) > 1 else f"{mean:.4f}")
    return table


def plot_summary(per_setting: dict[str, list[dict]], path: Path) -> Path:
    """Weighted and macro F1 of every approach in every setting, mean with the std over folds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(per_setting)
    approaches = list(per_setting[settings[0]][0])
    fig, axes = plt.subplots(1, 2, figsize=(4 + 2.5 * len(settings), 4), sharey=True)
    width = 0.8 / len(approaches)
    for ax, metric in zip(axes, ("f1_weighted", "f1_macro")):
        for j, approach in enumerate(approaches):
            stats = [_stats(per_setting[s], approach, metric) for s in settings]
            ax.bar(np.arange(len(settings)) + j * width, [m for m, _ in stats], width, yerr=[s for _, s in stats],
                   label=approach, capsize=3)
        ax.set_xticks(np.arange(len(settings)) + 0.4 - width / 2, [SETTINGS[s] for s in settings], rotation=20,
                      ha="right", fontsize=8)
        ax.set_title(metric.replace("_", " "))
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("test F1")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
