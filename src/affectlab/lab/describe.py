"""`python experiments/raer.py describe [key=value ...]`: what a RAER dataset holds, from its annotation files.

Per split (train and the validation part carved from it as training does, and test): clips per class, and where the
annotation lines carry every annotator's vote, the inter-annotator agreement as Fleiss' kappa.
"""

from __future__ import annotations

import math

import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from affectlab.datasets import RaerClip, fleiss_kappa, load_label_set, load_raer_split, stratified_split
from affectlab.lab.raer import dataset_root


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

    table = Table(title=f"{root} ({label_set.name})")
    table.add_column("class")
    for name in summary:
        table.add_column(name, justify="right")
    for i, cls in enumerate(label_set.classes):
        cells = []
        for part in summary.values():
            share = part["counts"][i] / part["clips"] if part["clips"] else 0.0
            cells.append(f"{part['counts'][i]} ({share:.1%})")
        table.add_row(cls, *cells)
    table.add_section()
    table.add_row("clips", *(str(p["clips"]) for p in summary.values()))
    table.add_row("annotators per clip", *(str(p["annotators"] or "-") for p in summary.values()))
    table.add_row("Fleiss' kappa", *("-" if math.isnan(p["kappa"]) else f"{p['kappa']:.3f}" for p in summary.values()))
    if skip:
        table.add_row("skipped lines", str(len(skipped["train"])), "", str(len(skipped["test"])))
    (console or Console()).print(table)
    return summary
