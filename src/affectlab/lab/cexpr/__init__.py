"""Zero-shot multimodal compound expression recognition on C-EXPR-DB (9th ABAW): per-modality basic-emotion
probabilities fused by Multi-Head Probability Fusion, turned into 7 compound expressions by pair-wise aggregation.

    config.py      every key of the experiment, its default and meaning
    data.py        the videos cut into windows, frame labels, the basic-expression sets, the modality tables
    modalities.py  the modalities computed here (zero-shot CLIP, face models, text classifiers), cached as tables
    fusion.py      MHPF trained on basic expressions, one net per modality subset
    compounds.py   PPA and PFSA, frame predictions, the challenge's score
    train.py       the run: fusion, compounds, submission files, the modality ablation as nested runs
"""

from __future__ import annotations

from collections.abc import Sequence

from affectlab.lab.cli import Experiment, main as run_command

EXPERIMENT = Experiment(
    name="cexpr",
    summary="Zero-shot compound expressions on C-EXPR-DB: modality probabilities fused by MHPF (trained on basic "
            "expressions), turned into 7 compound expressions by PPA and PFSA, scored per frame as the ABAW challenge "
            "does.",
    commands={
        "train": ("affectlab.lab.cexpr.train:train", "fuse, predict compounds, write and score the submission files"),
        "predict": ("affectlab.lab.cexpr.predict:predict", "your videos through the trained fusion: predict "
                                                           "model=REF input=PATH -> per-frame compounds, ABAW file"),
    },
)


def main(argv: Sequence[str]) -> object:
    """Run a command of the experiment from its arguments (``[COMMAND] [config=…] [key=value …]``); errors raise."""
    return run_command(EXPERIMENT, argv)
