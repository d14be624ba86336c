"""The cexpr run, top to bottom: data (tables, windows, labels) -> MHPF trained on basic expressions (one net per
modality subset) -> PPA and PFSA compounds per frame, the challenge submission file and its score -> every subset of
the modalities as a nested MLflow run (the ablation)."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from affectlab.datasets.modality_tables import CEXPR_COMPOUNDS, align_modality_tables, read_modality_table
from affectlab.fusion import ppa_scores, score_submission, write_submission
from affectlab.lab.cexpr.compounds import (
    basic_f1,
    compound_f1,
    compound_methods,
    evaluate_subset,
    frame_predictions,
    fusion_subsets,
    label_word_embeddings,
    truth_of,
)
from affectlab.lab.cexpr.data import (
    BASIC_SETS,
    COMPOUND_EXPRESSIONS,
    PAIRS,
    Segments,
    basic_training_set,
    compound_videos,
    load_segments,
    modality_names,
    resolve_root,
    split_indices,
    table_paths,
)
from affectlab.lab.cexpr.fusion import fit_fusion, fuse, mean_weights, plot_weights
from affectlab.lab.cexpr.modalities import computed_tables, direct_compound_tables, text_tables_of
from affectlab.lab.cexpr.predict import export
from affectlab.lab.checkpoints import resume_point
from affectlab.lab.config import ConfigError, flatten
from affectlab.lab.report import print_table
from affectlab.lab.run import finish, start
from affectlab.lab.sweep import Sweep
from affectlab.lab.tracking import log_dataset, make_logger


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the fusion on basic expressions, predict compounds with PPA and PFSA, score; returns the metrics."""
    start(cfg)
    counts = (cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1), os.environ.get("WORLD_SIZE", 1))
    if any(str(count) != "1" for count in counts):
        # a few thousand parameters on tables: one process; several would each score and log the same compounds
        raise ConfigError("trainer.devices and trainer.num_nodes must be 1: the fusion trains on one process")
    if not cfg.data.basic_sets:  # the fusion is trained on them: without any there is nothing to fit
        raise ConfigError(f"data.basic_sets=[]: expected a non-empty subset of {list(BASIC_SETS)}")
    label_words = label_word_embeddings(cfg)
    root = resolve_root(cfg.data)
    videos = compound_videos(root, cfg.data)
    basic_sets = {name: BASIC_SETS[name](root, cfg.data, bool(cfg.visual.modalities)) for name in cfg.data.basic_sets}
    halves = ["cexpr", *basic_sets]
    texts = text_tables_of(root, halves, cfg.text.modalities)
    computed = computed_tables(cfg, root, {"cexpr": videos, **basic_sets}, texts)
    modalities = modality_names(root, cfg.data.modalities, [*cfg.visual.modalities, *texts], halves)
    compound = load_segments(table_paths(root, "cexpr", modalities, computed), [i for v in videos for i in v.ids()])
    parts = [load_segments(table_paths(root, name, modalities, computed), [i for v in vids for i in v.ids()])
             for name, vids in basic_sets.items()]
    basic_all = Segments(tuple(i for part in parts for i in part.ids),
                         np.concatenate([part.probs for part in parts]),
                         np.concatenate([part.present for part in parts]))
    basic, labels = basic_training_set([v for vids in basic_sets.values() for v in vids], basic_all)

    # kill -9 at any moment: resume=auto continues the newest intact checkpoint into its MLflow run (the tables above
    # are a cache, and the face models' training in it resumes by itself)
    resume, run_id, folder = resume_point(cfg.resume, Path(cfg.checkpoint_dir))
    logger = make_logger(cfg, run_id=run_id)
    if not run_id:
        logger.log_hyperparams(flatten(cfg) | {"modalities": ",".join(modalities)})
        source = str(root) if cfg.data.root else f"embedded synthetic C-EXPR-DB (generated, {root})"
        log_dataset(logger, "basic-expression windows", source, len(labels), "train", toy=not cfg.data.root)
        log_dataset(logger, "C-EXPR-DB windows", source, len(compound.ids), "test", toy=not cfg.data.root)
    subsets = fusion_subsets(len(modalities), cfg.ablation)
    module = fit_fusion(cfg, basic, labels, subsets, logger, folder, resume)
    client, run_id = logger.experiment, logger.run_id
    with tempfile.TemporaryDirectory(prefix="affectlab-cexpr-") as temporary:  # removed once its files are logged
        artifacts = Path(temporary)

        # the main method: all modalities fused (the last net), PPA and PFSA; their submission files are scored through
        # the file, as the challenge does
        compound_fused, basic_fused_all = fuse(module, compound), fuse(module, basic)
        fused, basic_fused = compound_fused[-1], basic_fused_all[-1]
        methods = compound_methods(fused, basic_fused, labels, cfg.compound, label_words)
        truth = truth_of(videos)
        metrics: dict[str, float] = {}
        submissions = []
        for name, scores in methods.items():
            submission = write_submission(artifacts / f"submission_{name}.csv", frame_predictions(videos, scores),
                                          COMPOUND_EXPRESSIONS)
            score = score_submission(submission, truth, COMPOUND_EXPRESSIONS)
            metrics[f"compound_f1/fusion_{name}"] = score.macro_f1
            for cls, value in score.per_class_f1.items():
                if np.isfinite(value):
                    client.log_metric(run_id, f"compound_f1_class/{name}/{cls.replace(' ', '_')}", value)
            submissions.append(submission)
        for weighted, mask in ((True, False), (False, True), (True, True)):  # PPA's options beside the configured one
            variant = ppa_scores(fused, PAIRS, weighted=weighted, mask=mask)
            metrics[f"compound_f1/fusion_ppa{'_weighted' * weighted}{'_masked' * mask}"] = compound_f1(videos, variant)
        metrics["basic_val_score/fusion"] = module.best_scores[-1]
        _, val = split_indices(len(labels), cfg.data.val_fraction, cfg.seed)
        metrics["basic_val_f1/fusion"] = basic_f1(basic_fused[val], labels[val])
        singles = {}
        for m, name in enumerate(modalities):  # every modality alone: basic F1 and compounds through the same PPA/PFSA
            metrics[f"basic_val_f1/{name}"] = basic_f1(basic.probs[val, m], labels[val])
            singles[(m,)] = evaluate_subset(cfg, compound.probs[:, m], basic.probs[:, m], labels, videos, label_words)
            for method, value in singles[(m,)].items():
                metrics[f"compound_f1/{name}_{method.split('/')[1]}"] = value
        for name, path in direct_compound_tables(root, modalities, computed).items():  # zero-shot CLIP's compound words
            table = read_modality_table(path, classes=CEXPR_COMPOUNDS)
            _, direct, _ = align_modality_tables([table], compound.ids)
            metrics[f"compound_f1/{name}_direct"] = compound_f1(videos, direct[:, 0])

        weights_png = plot_weights(mean_weights(module, compound, len(subsets) - 1), modalities,
                                   artifacts / "fusion_weights.png", title=f"MHPF ({cfg.fusion.kind}) modality weights")
        if cfg.ablation:
            fused_of = {subset: (compound_fused[k], basic_fused_all[k], module.best_scores[k])
                        for k, subset in enumerate(subsets)}
            ablation = log_ablation(cfg, Sweep(cfg, folder, logger, resumed=False), modalities, fused_of, singles, labels,
                                    videos, label_words)
            client.log_table(run_id, data=ablation, artifact_file="modality_ablation.json")
            print_table(ablation, title="modality ablation: compound macro-F1")
        finish(cfg, logger, "C-EXPR-DB compound expressions", metrics, artifacts=[*submissions, weights_png],
               metrics=metrics)
        export(logger, cfg, modalities, module.bank, computed)
        logger.finalize("success")
        return metrics


def log_ablation(cfg: DictConfig, sweep: Sweep, modalities: Sequence[str], fused_of: dict, singles: dict,
                 labels: np.ndarray, videos, label_words) -> dict[str, list]:
    """Every non-empty subset of the modalities as a nested run; returns the summary table as columns."""
    methods = [key.split("/")[1] for key in singles[(0,)]]
    table: dict[str, list] = {"modalities": [], **{f"compound_f1_{m}": [] for m in methods}, "basic_val_score": []}
    for size in range(1, len(modalities) + 1):
        for subset in itertools.combinations(range(len(modalities)), size):
            names = [modalities[m] for m in subset]
            if size == 1:
                scores, basic_score = singles[subset], float("nan")
            else:
                compound_fused, basic_fused, basic_score = fused_of[subset]
                scores = evaluate_subset(cfg, compound_fused, basic_fused, labels, videos, label_words)
            shown = {**scores, **({"basic_val_score": basic_score} if np.isfinite(basic_score) else {})}
            sweep.log_child("+".join(names), {"modalities": ",".join(names)}, shown)
            table["modalities"].append("+".join(names))
            for method in methods:
                table[f"compound_f1_{method}"].append(scores[f"compound_f1/{method}"])
            table["basic_val_score"].append(basic_score)
    return table
