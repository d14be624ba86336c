"""What a run shows a person: the confusion-matrix figure, the summary of its metrics and tables of results (the one
place rich tables are printed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: true class) with the counts in each cell, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix, dtype=np.int64)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.9 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(class_names)), class_names, rotation=35, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            colour = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, f"{rates[i, j]:.2f}\n({matrix[i, j]})", ha="center", va="center", fontsize=8, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="recall")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_summary(metrics: Mapping[str, float], title: str, console: Console | None = None) -> Table:
    """A two-column table of the run's final metrics, in the order they were logged."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{float(value):.4f}")
    (console or Console()).print(table)
    return table


def print_table(columns: Mapping[str, Sequence], title: str, console: Console | None = None) -> Table:
    """A table given as columns (name -> values, all of one length); numbers are shown with 4 decimals, the first
    column left-aligned and the others right-aligned."""
    table = Table(title=title)
    for position, name in enumerate(columns):
        table.add_column(str(name), justify="left" if position == 0 else "right", overflow="fold")
    for row in zip(*columns.values()):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    (console or Console()).print(table)
    return table


class Progress:
    """Progress over a known number of items: a rich bar on a terminal; plain lines, flushed, every tenth of the way
    when the output goes to a file (a log, a batch job), so that it shows there too."""

    def __init__(self, total: int, description: str):
        import sys

        self.total, self.description, self.done, self._shown = max(int(total), 1), description, 0, -1
        self._bar = None
        if sys.stdout.isatty():
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(transient=False)
            self._task = self._bar.add_task(description, total=self.total)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        tenth = min(10, self.done * 10 // self.total)
        if tenth > self._shown:
            self._shown = tenth
            print(f"{self.description}: {self.done}/{self.total}", flush=True)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def loud_warning(message: str) -> None:
    """A warning, and a banner on stderr that no log level hides (rank 0): for data that stands in for the real."""
    import os
    import sys

    from lightning.pytorch.utilities import rank_zero_warn

    rank_zero_warn(message)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"\n{'!' * 100}\n{message}\n{'!' * 100}\n", file=sys.stderr, flush=True)
