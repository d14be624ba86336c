"""Pair-Wise Feature Similarity Aggregation (PFSA): compound expressions from feature similarity to basic prototypes.

PFSA has no public definition; this is affectlab's. For a segment with a fused multimodal feature f and one prototype
mu_e per basic emotion e in the same space:

    s_e   = cos(f, mu_e)                                   similarity to each basic emotion
    z_k   = w_i s_i + w_j s_j                              compound k = (i, j), PPA's seven pairs and weights
    P(k)  = softmax_k(z_k / temperature)                   compound probabilities

Two choices of (f, mu), both from the MHPF-fused basic-emotion probabilities p of the segment:

- class means: f = p, and mu_e is the mean of p over the basic-expression training windows labelled e
  (`class_prototypes`). s_e asks "how much does this segment look like a typical e segment", including the
  confusions the fusion makes on e, which PPA ignores.
- CLIP text: mu_e is the CLIP text embedding of e's label word, centred on the eight words' mean and of unit length
  (`label_word_prototypes`), and f = sum_e p_e mu_e, the fused prediction written in that space
  (`label_space_features`). Then s_e = (p G)_e / |p M| with G the prototypes' Gram matrix: a basic emotion also
  scores through the label words close to it in CLIP's space.

Unlike PPA, which adds probabilities, PFSA compares directions, so the scale of f does not matter and any feature
in which the basic emotions are not calibrated probabilities can be used.
"""

from __future__ import annotations

import numpy as np

from affectlab.fusion.ppa import pair_matrix


def class_prototypes(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[num_classes, D] class-mean features; a class without samples gets a NaN row (never the most similar)."""
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features {features.shape} and labels {labels.shape}; expected [N, D] and [N]")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels span {labels.min()}..{labels.max()}; expected 0..{num_classes - 1}")
    sums = np.zeros((num_classes, features.shape[1]))
    np.add.at(sums, labels, features)
    counts = np.bincount(labels, minlength=num_classes)[:, None].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def label_word_prototypes(label_embeddings: np.ndarray) -> np.ndarray:
    """[B, D] label-word embeddings -> [B, D] PFSA's CLIP-text prototypes: each minus the words' mean, unit length.
    The words' shared part (the prompt template, and the narrow cone a CLIP's text embeddings fill) says nothing
    about which emotion a word names; left in, it makes every word nearly as similar to every feature."""
    label_embeddings = np.asarray(label_embeddings, dtype=np.float64)
    if label_embeddings.ndim != 2 or label_embeddings.shape[0] < 2:
        raise ValueError(f"label embeddings have shape {label_embeddings.shape}; expected (basic classes, D)")
    centred = label_embeddings - label_embeddings.mean(axis=0)
    return centred / np.linalg.norm(centred, axis=1, keepdims=True).clip(1e-12)


def label_space_features(probs: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """[..., B] basic-emotion probabilities and the [B, D] `label_word_prototypes` -> [..., D] sum_e p_e mu_e."""
    return np.asarray(probs, dtype=np.float64) @ np.asarray(prototypes, dtype=np.float64)


def pfsa_scores(
    features: np.ndarray, prototypes: np.ndarray, pairs, *, weighted: bool = False, temperature: float = 0.1
) -> np.ndarray:
    """[..., D] features, [B, D] prototypes (one per basic class) and K `pairs` (as PPA's) -> [..., K] compound
    probabilities."""
    features = np.asarray(features, dtype=np.float64)
    prototypes = np.asarray(prototypes, dtype=np.float64)
    if prototypes.ndim != 2 or prototypes.shape[1] != features.shape[-1]:
        raise ValueError(f"prototypes have shape {prototypes.shape}; expected (basic classes, {features.shape[-1]})")
    unit = prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True).clip(1e-12)
    unit = np.nan_to_num(unit, nan=0.0)  # a class with no prototype is orthogonal to everything
    flat = features.reshape(-1, features.shape[-1])
    norms = np.sqrt(np.einsum("nd,nd->n", flat, flat)).clip(1e-12)
    # cosine similarities, paired and scaled, in one product; [K, N] so the softmax reduces over contiguous rows
    z = (pair_matrix(pairs, len(prototypes), weighted).T @ unit) @ flat.T
    z /= norms * temperature
    z -= z.max(axis=0)
    np.exp(z, out=z)
    z /= z.sum(axis=0)
    return z.T.reshape(*features.shape[:-1], z.shape[0])
