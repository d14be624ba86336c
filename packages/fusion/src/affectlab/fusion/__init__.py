"""affectlab.fusion: multimodal probability fusion for compound expression recognition (plain PyTorch and NumPy).

MHPF (`MultiHeadProbabilityFusion`, `InputDependentMHPF`) fuses per-modality basic-emotion probabilities; PPA
(`ppa_scores`) and PFSA (`pfsa_scores`) turn basic emotions into the seven compound expressions; `frames` spreads
segment predictions over frames, writes the challenge submission file and scores it.
"""

from affectlab.fusion.frames import (
    SUBMISSION_HEADER,
    FrameScore,
    read_submission,
    score_frames,
    score_submission,
    segments_to_frames,
    write_submission,
)
from affectlab.fusion.mhpf import (
    InputDependentMHPF,
    MhpfBank,
    MultiHeadProbabilityFusion,
    class_weights,
    create_mhpf,
    fused_probabilities,
    mhpf_combine,
    mhpf_loss,
    modality_weights,
)
from affectlab.fusion.pfsa import (
    class_prototypes,
    label_space_features,
    label_word_prototypes,
    pfsa_predict,
    pfsa_scores,
)
from affectlab.fusion.ppa import (
    BASIC_EMOTIONS,
    COMPOUND_EXPRESSIONS,
    COMPOUND_PAIRS,
    MASK_THRESHOLD,
    pair_weights,
    ppa_predict,
    ppa_scores,
)

__all__ = [
    "BASIC_EMOTIONS",
    "COMPOUND_EXPRESSIONS",
    "COMPOUND_PAIRS",
    "FrameScore",
    "InputDependentMHPF",
    "MhpfBank",
    "MASK_THRESHOLD",
    "MultiHeadProbabilityFusion",
    "SUBMISSION_HEADER",
    "class_prototypes",
    "class_weights",
    "create_mhpf",
    "fused_probabilities",
    "label_space_features",
    "label_word_prototypes",
    "mhpf_combine",
    "mhpf_loss",
    "modality_weights",
    "pair_weights",
    "pfsa_predict",
    "pfsa_scores",
    "ppa_predict",
    "ppa_scores",
    "read_submission",
    "score_frames",
    "score_submission",
    "segments_to_frames",
    "write_submission",
]
