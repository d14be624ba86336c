"""Figures of a layer sweep: a metric against depth (one line per model, with its confidence band), a PCA of a probe's
outputs, and a text's per-token emotion trajectory.

matplotlib is imported inside each function (headless backend), so importing affectlab.probing never needs it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Lays ``fig`` out, writes it to ``path`` (its folder made) at 120 dpi and closes it."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_accuracy_by_depth(
    curves: Mapping[str, Sequence[Sequence[float]]],
    path: Path,
    *,
    chance: float | None = None,
    baselines: Mapping[str, float | Sequence[float]] | None = None,
    ylabel: str = "balanced test accuracy",
    title: str = "probe accuracy by layer depth",
) -> Path:
    """``curves``: model name → (depth fractions 0..1, values), or (depths, values, lows, highs) to draw each
    layer's confidence interval as a band (`BootstrapMetrics.curve`). ``baselines``: name → value or (value, low,
    high), drawn as horizontal lines (with their band). A dashed line marks chance if given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colours = plt.get_cmap("tab10")
    for index, (name, curve) in enumerate(curves.items()):
        depths, values = np.asarray(curve[0]) * 100, curve[1]
        line = ax.plot(depths, values, marker="o", label=name, color=colours(index % 10))[0]
        if len(curve) == 4:
            ax.fill_between(depths, curve[2], curve[3], color=line.get_color(), alpha=0.2, linewidth=0)
    for index, (name, baseline) in enumerate((baselines or {}).items()):
        value, *band = np.atleast_1d(np.asarray(baseline, dtype=float))
        colour = colours((len(curves) + index) % 10)
        ax.axhline(value, color=colour, linestyle=":", linewidth=1.5, label=f"{name} ({value:.3f})")
        if len(band) == 2:
            ax.axhspan(band[0], band[1], color=colour, alpha=0.1, linewidth=0)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.3f})")
    ax.set_xlabel("layer depth (%)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def pca_2d(values: torch.Tensor) -> torch.Tensor:
    """The first two principal components of ``values [N, D]`` (centred; by SVD)."""
    centred = values.double() - values.double().mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[:2].T).float()


def plot_probe_pca(
    logits: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], path: Path, *, title: str = ""
) -> Path:
    """The probe's outputs ``[N, classes]`` projected on their 2 principal components, one colour per true class,
    with each class' density (a Gaussian kernel estimate on a grid) drawn as contours."""
    from scipy.stats import gaussian_kde

    plt = _pyplot()
    points = pca_2d(torch.as_tensor(logits)).numpy()
    labels = np.asarray(labels)
    fig, ax = plt.subplots(figsize=(6.0, 5.0))
    pad = 0.1 * (points.max(axis=0) - points.min(axis=0) + 1e-9)
    low, high = points.min(axis=0) - pad, points.max(axis=0) + pad
    grid_x, grid_y = np.meshgrid(np.linspace(low[0], high[0], 80), np.linspace(low[1], high[1], 80))
    colours = plt.get_cmap("tab10")
    for index, name in enumerate(class_names):
        mine = points[labels == index]
        if len(mine) == 0:
            continue
        colour = colours(index % 10)
        ax.scatter(mine[:, 0], mine[:, 1], s=6, alpha=0.35, color=colour, label=name)
        if len(mine) > 3:
            try:
                density = gaussian_kde(mine.T)(np.vstack([grid_x.ravel(), grid_y.ravel()])).reshape(grid_x.shape)
                ax.contour(grid_x, grid_y, density, levels=3, colors=[colour], linewidths=1)
            except np.linalg.LinAlgError:  # all points on a line: no 2-D density to draw
                pass
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title or "PCA of probe outputs")
    ax.legend(fontsize=7, markerscale=2)
    return _save(fig, path)


def plot_accuracy_by_offset(
    accuracy: Mapping[int, tuple[float, int]], path: Path, *, chance: float | None = None, title: str = ""
) -> Path:
    """Persistence: the offset-aware probe's accuracy against the reply position (`persistence.accuracy_by_offset`)."""
    plt = _pyplot()
    positions = sorted(k for k, (value, count) in accuracy.items() if count > 0)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ax.plot(positions, [accuracy[k][0] for k in positions], marker=".")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.3f})")
        ax.legend(fontsize=8)
    ax.set_xlabel("reply position (tokens)")
    ax.set_ylabel("probe accuracy")
    ax.set_ylim(0.0, 1.0)
    ax.set_title(title or "persistence of the user's emotion in the reply")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_token_trajectory(trajectory, path: Path, *, title: str = "") -> Path:
    """A text's emotion scores token by token (`directions.TokenTrajectory`): one line per emotion, the tokens along
    the x axis (every one up to 60 tokens, then evenly thinned), the legend outside the plot."""
    plt = _pyplot()
    count = len(trajectory.tokens)
    fig, ax = plt.subplots(figsize=(min(18.0, max(6.0, 0.25 * count + 3.0)), 4.2))
    colours = plt.get_cmap("tab10")
    values = np.asarray(trajectory.values, dtype=float)
    for index, name in enumerate(trajectory.classes):
        ax.plot(range(count), values[:, index], marker=".", color=colours(index % 10), label=name)
    step = max(1, -(-count // 60))
    ax.set_xticks(range(0, count, step))
    ax.set_xticklabels([repr(t)[1:-1] for t in trajectory.tokens[::step]], rotation=90, fontsize=7)
    ax.set_xlabel("token")
    kind = "projection on the emotion direction" if trajectory.kind == "projection" else "probe probability"
    ax.set_ylabel(kind)
    if trajectory.kind == "probability":
        ax.set_ylim(0.0, 1.0)
    else:
        ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_title(title or f"emotions over the tokens, layer {trajectory.layer}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)
