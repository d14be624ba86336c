"""Textualized vs feature-based multimodal emotion recognition on MELD and C-EXPR-DB (Richet et al., 2024).

    config.py   every key of the experiment, its default and meaning
    data.py     MELD's utterances, C-EXPR-DB's fold clips, their cue tables, the items and their datamodule
    clips.py    MELD's video clips: a video and a speech vector per utterance, cached
    module.py   the networks of each approach and the LightningModule that trains them
    train.py    every training as a nested run of one sweep, mean ± std per setting
"""

from __future__ import annotations

from collections.abc import Sequence

from affectlab.lab.cli import Experiment, main as run_command

EXPERIMENT = Experiment(
    name="meld",
    summary="Textualized (cues written into a prompt for a language model) vs feature-based (attention fusion of "
            "feature vectors) emotion recognition on MELD and C-EXPR-DB, with the transcript alone as the check.",
    commands={
        "train": ("affectlab.lab.meld.train:train", "train and test every approach in every setting as nested runs"),
        "predict": ("affectlab.lab.meld.predict:predict", "your texts through the trained words-alone model: "
                                                          "predict model=REF input=PATH -> predictions.csv"),
    },
)


def main(argv: Sequence[str]) -> object:
    """Run a command of the experiment from its arguments (``[COMMAND] [config=…] [key=value …]``); errors raise."""
    return run_command(EXPERIMENT, argv)
