"""From fused basic-emotion probabilities to compound expressions: PPA and PFSA window scores (affectlab.fusion, with
C-EXPR-DB's compound pairs), spread over the frames, scored with the challenge's per-frame macro-F1."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torchmetrics.functional.classification import multiclass_f1_score

from affectlab.fusion import (
    class_prototypes,
    label_space_features,
    label_word_prototypes,
    pfsa_scores,
    ppa_scores,
    score_frames,
    segments_to_frames,
)
from affectlab.lab.cexpr.data import COMPOUND_EXPRESSIONS, NUM_BASIC, PAIRS, WindowedVideo, zero_shot_clip
from affectlab.lab.config import ConfigError
from affectlab.models.clip import create_clip


def frame_predictions(videos: Sequence[WindowedVideo], scores: np.ndarray) -> dict[str, np.ndarray]:
    """Window compound scores [N, 7] (NaN rows: nothing to say) -> per-frame compound index of every video."""
    predictions, row = {}, 0
    for item in videos:
        count = len(item.windows)
        chunk, windows = scores[row : row + count], item.windows
        row += count
        known = ~np.isnan(chunk).any(axis=1)
        if not known.any():  # no window of this video has any modality: a constant guess, the first class
            predictions[item.name] = np.zeros(item.num_frames, dtype=np.int64)
            continue
        frames = segments_to_frames(windows[known, 0], windows[known, 1], chunk[known], item.num_frames)
        predictions[item.name] = frames.argmax(axis=1)
    return predictions


PFSA_PROTOTYPES = {"class_means": "pfsa", "clip_text": "pfsa_text"}  # prototype kind -> method name in the metrics


def compound_methods(
    fused: np.ndarray, basic_fused: np.ndarray, basic_labels: np.ndarray, comp: DictConfig,
    label_words: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """PPA and PFSA window scores [N, 7] from the fused basic-emotion probabilities: `pfsa` with the class means of
    the fused probabilities of the basic training windows as prototypes, `pfsa_text` with the CLIP text embeddings
    of the label words `label_words` [8, D] (see affectlab.fusion.pfsa), as `comp.pfsa_prototypes` asks."""
    known = ~np.isnan(fused).any(axis=1)
    methods = {"ppa": ppa_scores(fused, PAIRS, weighted=comp.ppa_weighted, mask=comp.ppa_mask)}
    for kind in comp.pfsa_prototypes:
        if kind == "class_means":
            features, prototypes = fused[known], class_prototypes(basic_fused, basic_labels, NUM_BASIC)
        else:
            prototypes = label_word_prototypes(label_words)
            features = label_space_features(fused[known], prototypes)
        scores = np.full((len(fused), len(COMPOUND_EXPRESSIONS)), np.nan)
        scores[known] = pfsa_scores(features, prototypes, PAIRS, weighted=comp.pfsa_weighted,
                                    temperature=comp.pfsa_temperature)
        methods[PFSA_PROTOTYPES[kind]] = scores
    return methods


@torch.no_grad()
def label_word_embeddings(cfg: DictConfig) -> np.ndarray | None:
    """[8, D] unit CLIP text embeddings of the basic label words in zero-shot CLIP's prompt (the same seeded model as
    the zero-shot table's when it is randomly initialised), or None when PFSA does not use them."""
    unknown = [kind for kind in cfg.compound.pfsa_prototypes if kind not in PFSA_PROTOTYPES]
    if unknown:
        raise ConfigError(f"compound.pfsa_prototypes has {unknown}; expected a subset of {list(PFSA_PROTOTYPES)}")
    if "clip_text" not in cfg.compound.pfsa_prototypes:
        return None
    with torch.random.fork_rng():  # the run's own random draws stay as they were
        torch.manual_seed(cfg.seed)
        clip = create_clip(cfg.visual.backbone, cfg.visual.pretrained)
    clip.model.eval()
    return zero_shot_clip(clip).text[:NUM_BASIC].double().numpy()


def truth_of(videos: Sequence[WindowedVideo]) -> dict[str, np.ndarray]:
    return {item.name: item.truth for item in videos}


def compound_f1(videos: Sequence[WindowedVideo], scores: np.ndarray) -> float:
    predictions = frame_predictions(videos, scores)
    return score_frames(
        np.concatenate([predictions[v.name] for v in videos]), np.concatenate([v.truth for v in videos]),
        COMPOUND_EXPRESSIONS,
    ).macro_f1


def basic_f1(probs: np.ndarray, labels: np.ndarray) -> float:
    """Macro-F1 over the 8 basic classes of the windows that have probabilities (a missing modality has none)."""
    known = ~np.isnan(probs).any(axis=1)
    if not known.any():
        return float("nan")
    predictions = torch.as_tensor(probs[known].argmax(axis=1))
    return float(multiclass_f1_score(predictions, torch.as_tensor(labels[known]), NUM_BASIC, average="macro"))


def fusion_subsets(num_modalities: int, ablation: bool) -> list[tuple[int, ...]]:
    """The modality subsets to train a fusion for: all of them with two or more modalities for the ablation (one
    modality needs none: MHPF passes it through), else only the full set; the full set is always last."""
    if not ablation or num_modalities == 1:
        return [tuple(range(num_modalities))]
    return [s for size in range(2, num_modalities + 1) for s in itertools.combinations(range(num_modalities), size)]


def evaluate_subset(cfg: DictConfig, fused: np.ndarray, basic_fused: np.ndarray, labels: np.ndarray,
                    videos: Sequence[WindowedVideo], label_words: np.ndarray | None) -> dict[str, float]:
    """Compound macro-F1 of PPA and PFSA from one subset's fused probabilities of the compound windows and the
    basic training windows (PFSA's class-mean prototypes)."""
    known = ~np.isnan(basic_fused).any(axis=1)
    methods = compound_methods(fused, basic_fused[known], labels[known], cfg.compound, label_words)
    return {f"compound_f1/{name}": compound_f1(videos, scores) for name, scores in methods.items()}
