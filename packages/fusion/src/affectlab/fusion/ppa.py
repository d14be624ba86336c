"""Pair-Wise Probability Aggregation (PPA): seven compound expressions from eight basic-emotion probabilities.

A compound's score is the sum of its two basic emotions' probabilities; the prediction is the argmax. Neutral and
Other take no part. Options (9th ABAW zero-shot compound system):

- weighted pairs: score = w_i p_i + w_j p_j with w_i = d_i / (d_i + d_j) and d_e = 7 - (number of compounds that
  contain e), so an emotion shared by many compounds (Surprise, in five) counts less than a rarer one;
- mask: basic probabilities below 1/7 are set to 0 before the sums.

Arrays are NumPy; every function works on any leading shape [..., 8].
"""

from __future__ import annotations

import numpy as np

from affectlab.datasets.affwild2 import AFFWILD2_EXPRESSIONS
from affectlab.datasets.cexpr import COMPOUND_PAIRS

# AffWild2's label order, and C-EXPR-DB's compounds (in its class order) each with its two basic emotions: the
# datasets package owns both; they are re-exported here for the fusion's users
BASIC_EMOTIONS: tuple[str, ...] = AFFWILD2_EXPRESSIONS
COMPOUND_EXPRESSIONS: tuple[str, ...] = tuple(COMPOUND_PAIRS)
MASK_THRESHOLD = 1.0 / 7.0

# [7, 2] indices into BASIC_EMOTIONS
PAIR_INDEX = np.array([[BASIC_EMOTIONS.index(a), BASIC_EMOTIONS.index(b)] for a, b in COMPOUND_PAIRS.values()])


def pair_weights(weighted: bool = True) -> np.ndarray:
    """[7, 2]: the weight of each compound's first and second basic emotion (1, 1 unweighted)."""
    if not weighted:
        return np.ones(PAIR_INDEX.shape)
    containing = np.bincount(PAIR_INDEX.ravel(), minlength=len(BASIC_EMOTIONS))
    d = (len(COMPOUND_PAIRS) - containing)[PAIR_INDEX].astype(np.float64)
    return d / d.sum(axis=1, keepdims=True)


def pair_matrix(weighted: bool = False) -> np.ndarray:
    """[8, 7]: column k holds compound k's two pair weights at its basic emotions, so scores = probs @ matrix."""
    matrix = np.zeros((len(BASIC_EMOTIONS), len(COMPOUND_PAIRS)))
    compounds = np.arange(len(COMPOUND_PAIRS))
    w = pair_weights(weighted)
    matrix[PAIR_INDEX[:, 0], compounds] = w[:, 0]
    matrix[PAIR_INDEX[:, 1], compounds] = w[:, 1]
    return matrix


def ppa_scores(probs: np.ndarray, *, weighted: bool = False, mask: bool = False) -> np.ndarray:
    """[..., 8] basic-emotion probabilities -> [..., 7] compound scores."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[-1] != len(BASIC_EMOTIONS):
        raise ValueError(f"probs has {probs.shape[-1]} classes; expected {len(BASIC_EMOTIONS)} ({BASIC_EMOTIONS})")
    if mask:
        probs = probs * (probs >= MASK_THRESHOLD)
    return probs @ pair_matrix(weighted)  # one matrix product does all seven pair sums


def ppa_predict(probs: np.ndarray, *, weighted: bool = False, mask: bool = False) -> np.ndarray:
    """[..., 8] -> [...] compound index 0..6 (ties go to the first compound in C-EXPR-DB's order)."""
    return ppa_scores(probs, weighted=weighted, mask=mask).argmax(axis=-1)
