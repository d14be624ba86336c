"""`python experiments/raer.py describe [key=value ...]`: what a RAER dataset holds, from its annotation files.

Per split (train and the validation part carved from it as training does, and test): clips per class, and where the
annotation lines carry every annotator's vote, the inter-annotator agreement as Fleiss' kappa.
"""

from __future__ import annotations

import math

import numpy as np
from omegaconf import DictConfig
from rich.console import Console

from affectlab.datasets import RaerClip, fleiss_kappa, load_label_set, load_raer_split, stratified_split
from affectlab.lab.raer.data import dataset_root
from affectlab.lab.report import print_table


def split_summary(clips: list[RaerClip], num_classes: int) -> dict:
    """{"clips", "counts" per class, "annotators" (0 without votes), "kappa" (NaN without votes)}."""
    counts = np.bincount([c.label for c in clips], minlength=num_classes).tolist()
    voted = [c.votes for c in clips if c.votes is not None]
    annotators = int(sum(voted[0])) if voted else 0
    kappa = fleiss_kappa(np.array(voted)) if voted and len(voted) == len(clips) else float("nan")
    return {"clips": len(clips), "counts": counts, "annotators": annotators, "kappa": kappa}


def describe(cfg: DictConfig, console: Console | None = None) -> dict[str, dict]:
    """Summaries of the train, val and test splits the config's data section selects; prints them as a table."""
    root = dataset_root(cfg.data)
    label_set = load_label_set(cfg.data.label_set)
    skipped: dict[str, list[str]] = {"train": [], "test": []}
    skip = cfg.data.on_bad_clip == "skip"
    train = load_raer_split(root, "train", label_set, skipped=skipped["train"] if skip else None)
    test = load_raer_split(root, "test", label_set, skipped=skipped["test"] if skip else None)
    train, val = stratified_split(train, cfg.data.val_fraction, seed=cfg.seed)
    n = len(label_set.classes)
    summary = {name: split_summary(clips, n) for name, clips in (("train", train), ("val", val), ("test", test))}

    columns: dict[str, list] = {"class": [*label_set.classes, "clips", "annotators per clip", "Fleiss' kappa"]}
    for name, part in summary.items():
        cells = [f"{part['counts'][i]} ({part['counts'][i] / part['clips'] if part['clips'] else 0.0:.1%})"
                 for i in range(n)]
        cells += [str(part["clips"]), str(part["annotators"] or "-"),
                  "-" if math.isnan(part["kappa"]) else f"{part['kappa']:.3f}"]
        columns[name] = cells
    if skip:
        columns["class"].append("skipped lines")
        for name, count in (("train", len(skipped["train"])), ("val", ""), ("test", len(skipped["test"]))):
            columns[name].append(str(count))
    print_table(columns, title=f"{root} ({label_set.name})", console=console)
    return summary
