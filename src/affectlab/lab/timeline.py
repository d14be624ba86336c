"""The timeline figure of a video's predictions: class probabilities over time under a band of the predicted label."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def plot_timeline(starts: Sequence[float], ends: Sequence[float], probs: np.ndarray, classes: Sequence[str],
                  path: str | Path, title: str = "") -> Path:
    """Class probabilities per window [W, C] over the video's time, saved as PNG.

    Bottom: one line per class, each window's probability drawn at the window's centre (seconds). Top: a band
    coloured by each window's most probable class, in the same colours, every window holding the time from halfway
    after its left neighbour's centre to halfway before its right neighbour's (overlapping windows share time), and
    the class named where its run is wide enough to read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    starts, ends = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(starts), len(classes)) or len(ends) != len(starts) or not len(starts):
        raise ValueError(f"plot_timeline got {len(starts)} starts, {len(ends)} ends, probs of shape {probs.shape} and "
                         f"{len(classes)} classes; expected probs [windows, classes] with windows >= 1")
    centres = (starts + ends) / 2
    edges = np.concatenate([[starts[0]], (centres[1:] + centres[:-1]) / 2, [ends[-1]]])
    colours = [plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")(i % 20) for i in range(len(classes))]
    label = probs.argmax(axis=1)

    fig, (band, lines) = plt.subplots(2, 1, sharex=True, figsize=(11, 4.6),
                                      gridspec_kw={"height_ratios": [1, 6], "hspace": 0.05})
    # Runs of one label, so that a label held for many windows is one block with its name once.
    run_starts = np.flatnonzero(np.r_[True, label[1:] != label[:-1]])
    run_ends = np.r_[run_starts[1:], len(label)]
    span = edges[-1] - edges[0] or 1.0
    for first, stop in zip(run_starts, run_ends):
        left, right = edges[first], edges[stop]
        band.axvspan(left, right, color=colours[label[first]], linewidth=0)
        if (right - left) / span > 0.06:
            band.text((left + right) / 2, 0.5, classes[label[first]], ha="center", va="center", fontsize=8,
                      color="white", fontweight="bold", clip_on=True)
    band.set_yticks([])
    band.set_ylabel("label", rotation=0, ha="right", va="center", fontsize=9)
    for c, name in enumerate(classes):
        lines.plot(centres, probs[:, c], color=colours[c], linewidth=1.8, label=name,
                   marker="o" if len(centres) <= 30 else None, markersize=3)
    lines.set_xlim(edges[0], edges[-1] if edges[-1] > edges[0] else edges[0] + 1)
    lines.set_ylim(0, 1)
    lines.set_xlabel("time (s)")
    lines.set_ylabel("probability")
    lines.grid(alpha=0.3)
    lines.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    if title:
        band.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
