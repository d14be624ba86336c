"""Pair-Wise Probability Aggregation (PPA): compound expressions from basic-emotion probabilities.

A compound's score is the sum of its two basic emotions' probabilities; the prediction is the argmax. Basic classes in
no pair (Neutral, Other) take no part. Options (9th ABAW zero-shot compound system):

- weighted pairs: score = w_i p_i + w_j p_j with w_i = d_i / (d_i + d_j) and d_e = K - (number of compounds that
  contain e), K compounds, so an emotion shared by many compounds (Surprise, in five of seven) counts less than a
  rarer one;
- mask: basic probabilities below 1/7 are set to 0 before the sums.

`pairs` are each compound's two basic class indices, in compound order: C-EXPR-DB's are the `cexpr` label set of
affectlab.datasets (`load_label_set("cexpr").pair_index()`), which the fusion takes as an argument rather than
importing, so that this package needs nothing but NumPy and torch. Arrays are NumPy; every function works on any
leading shape [..., B] with B basic classes.
"""

from __future__ import annotations

import numpy as np

MASK_THRESHOLD = 1.0 / 7.0


def _pair_index(pairs, num_basic: int) -> np.ndarray:
    index = np.asarray(pairs, dtype=np.int64)
    if index.ndim != 2 or index.shape[1] != 2 or not len(index) or index.min() < 0 or index.max() >= num_basic:
        raise ValueError(f"pairs {np.asarray(pairs).tolist()}; expected (i, j) basic class indices in 0..{num_basic - 1}")
    return index


def pair_weights(pairs, num_basic: int, weighted: bool = True) -> np.ndarray:
    """[K, 2]: the weight of each compound's first and second basic emotion (1, 1 unweighted)."""
    index = _pair_index(pairs, num_basic)
    if not weighted:
        return np.ones(index.shape)
    containing = np.bincount(index.ravel(), minlength=num_basic)
    d = (len(index) - containing)[index].astype(np.float64)
    return d / d.sum(axis=1, keepdims=True)


def pair_matrix(pairs, num_basic: int, weighted: bool = False) -> np.ndarray:
    """[B, K]: column k holds compound k's two pair weights at its basic emotions, so scores = probs @ matrix."""
    index = _pair_index(pairs, num_basic)
    matrix = np.zeros((num_basic, len(index)))
    compounds = np.arange(len(index))
    w = pair_weights(index, num_basic, weighted)
    matrix[index[:, 0], compounds] = w[:, 0]
    matrix[index[:, 1], compounds] = w[:, 1]
    return matrix


def ppa_scores(probs: np.ndarray, pairs, *, weighted: bool = False, mask: bool = False) -> np.ndarray:
    """[..., B] basic-emotion probabilities and K `pairs` -> [..., K] compound scores; the argmax is the prediction
    (ties go to the first compound)."""
    probs = np.asarray(probs, dtype=np.float64)
    if mask:
        probs = probs * (probs >= MASK_THRESHOLD)
    return probs @ pair_matrix(pairs, probs.shape[-1], weighted)  # one matrix product does every pair sum
