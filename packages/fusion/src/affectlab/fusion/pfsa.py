"""Pair-Wise Feature Similarity Aggregation (PFSA): compound expressions from feature similarity to basic prototypes.

PFSA has no public definition; this is affectlab's. For a segment with a fused multimodal feature f (any vector,
e.g. the MHPF-fused probabilities or a CLIP embedding) and one prototype mu_e per basic emotion e in the same space:

    s_e   = cos(f, mu_e)                                   similarity to each basic emotion
    z_k   = w_i s_i + w_j s_j                              compound k = (i, j), PPA's seven pairs and weights
    P(k)  = softmax_k(z_k / temperature)                   compound probabilities

Prototypes are the class means of the features of a basic-expression training set (`class_prototypes`), or the
CLIP text embeddings of the label words. Unlike PPA, which adds probabilities, PFSA compares directions in feature
space, so it can use a feature in which the basic emotions are not calibrated probabilities.
"""

from __future__ import annotations

import numpy as np

from affectlab.fusion.ppa import BASIC_EMOTIONS, pair_matrix


def class_prototypes(features: np.ndarray, labels: np.ndarray, num_classes: int = len(BASIC_EMOTIONS)) -> np.ndarray:
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


def pfsa_scores(
    features: np.ndarray, prototypes: np.ndarray, *, weighted: bool = False, temperature: float = 0.1
) -> np.ndarray:
    """[..., D] features and [8, D] prototypes -> [..., 7] compound probabilities."""
    features = np.asarray(features, dtype=np.float64)
    prototypes = np.asarray(prototypes, dtype=np.float64)
    if prototypes.shape != (len(BASIC_EMOTIONS), features.shape[-1]):
        raise ValueError(
            f"prototypes have shape {prototypes.shape}; expected ({len(BASIC_EMOTIONS)}, {features.shape[-1]})"
        )
    unit = prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True).clip(1e-12)
    unit = np.nan_to_num(unit, nan=0.0)  # a class with no prototype is orthogonal to everything
    flat = features.reshape(-1, features.shape[-1])
    norms = np.sqrt(np.einsum("nd,nd->n", flat, flat)).clip(1e-12)
    # cosine similarities, paired and scaled, in one product; [7, N] so the softmax reduces over contiguous rows
    z = (pair_matrix(weighted).T @ unit) @ flat.T
    z /= norms * temperature
    z -= z.max(axis=0)
    np.exp(z, out=z)
    z /= z.sum(axis=0)
    return z.T.reshape(*features.shape[:-1], z.shape[0])


def pfsa_predict(features: np.ndarray, prototypes: np.ndarray, *, weighted: bool = False) -> np.ndarray:
    """[..., D] -> [...] compound index 0..6."""
    return pfsa_scores(features, prototypes, weighted=weighted).argmax(axis=-1)
