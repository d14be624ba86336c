"""affectlab.fusion: multimodal probability fusion for compound expression recognition (plain PyTorch and NumPy).

MHPF (`MultiHeadProbabilityFusion`, `InputDependentMHPF`, `MhpfBank`) fuses per-modality basic-emotion probabilities;
PPA (`ppa_scores`) and PFSA (`pfsa_scores`) turn basic emotions into compound expressions given each compound's pair
of basic classes (C-EXPR-DB's: `affectlab.datasets.load_label_set("cexpr").pair_index()`); `frames` spreads segment
predictions over frames, writes the challenge submission file and scores it; `textualize` turns non-verbal cues into
a prompt. The package reads no dataset: class vocabularies are passed in.
"""

from affectlab.fusion.frames import (
    FrameScore,
    read_submission,
    score_frames,
    score_submission,
    segments_to_frames,
    submission_header,
    write_submission,
)
from affectlab.fusion.mhpf import (
    MHPF_INITS,
    MHPF_KINDS,
    MHPF_LOSSES,
    InputDependentMHPF,
    MhpfBank,
    MhpfError,
    MultiHeadProbabilityFusion,
    authors_cross_entropy,
    class_weights,
    create_mhpf,
    fused_probabilities,
    mhpf_combine,
    mhpf_loss,
    modality_weights,
    renormalised_nll,
)
from affectlab.fusion.pfsa import class_prototypes, label_space_features, label_word_prototypes, pfsa_scores
from affectlab.fusion.ppa import MASK_THRESHOLD, pair_matrix, pair_weights, ppa_scores

__all__ = [
    "FrameScore",
    "InputDependentMHPF",
    "MASK_THRESHOLD",
    "MHPF_INITS",
    "MHPF_KINDS",
    "MHPF_LOSSES",
    "MhpfBank",
    "MhpfError",
    "MultiHeadProbabilityFusion",
    "authors_cross_entropy",
    "class_prototypes",
    "class_weights",
    "create_mhpf",
    "fused_probabilities",
    "label_space_features",
    "label_word_prototypes",
    "mhpf_combine",
    "mhpf_loss",
    "modality_weights",
    "pair_matrix",
    "pair_weights",
    "pfsa_scores",
    "ppa_scores",
    "read_submission",
    "renormalised_nll",
    "score_frames",
    "score_submission",
    "segments_to_frames",
    "submission_header",
    "write_submission",
]
