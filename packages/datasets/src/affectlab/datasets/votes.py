"""Annotator votes: the majority label, the soft label distribution, and agreement (Fleiss' kappa).

Votes of one clip are counted per class: counts[c] = how many annotators chose class c.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def majority_label(counts: Sequence[int]) -> int:
    """The class with the most votes. Tie rule: the tied class that comes first in the label set's class order
    (for raer_five: Neutrality before Enjoyment before ... Distraction), so the same votes always give the same label."""
    counts = np.asarray(counts)
    return int(np.argmax(counts))  # argmax returns the first of equal maxima


def soft_label(counts: Sequence[int]) -> np.ndarray:
    """The share of annotators who chose each class (sums to 1)."""
    counts = np.asarray(counts, dtype=np.float64)
    return (counts / counts.sum()).astype(np.float32)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa (Fleiss 1971) of an [items, classes] table of vote counts, every item with the same number n
    of raters: kappa = (P_bar - P_e) / (1 - P_e), where P_bar is the mean over items of the share of agreeing rater
    pairs, sum_c n_ic (n_ic - 1) / (n (n - 1)), and P_e = sum_c p_c^2 with p_c the share of all votes for class c.
    1 is perfect agreement, 0 what chance gives. NaN when there is nothing to agree on (one rater, or one class)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return float("nan")
    raters = counts.sum(axis=1)
    if not np.all(raters == raters[0]):
        raise ValueError(f"fleiss_kappa needs the same number of raters per item; got {sorted(set(raters.tolist()))}")
    n = raters[0]
    if n < 2:
        return float("nan")
    p_bar = ((counts * (counts - 1)).sum(axis=1) / (n * (n - 1))).mean()
    p_e = ((counts.sum(axis=0) / counts.sum()) ** 2).sum()
    if p_e == 1.0:
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))
