"""CLIP-CAER on RAER: academic emotions of students in classroom video, from the face and its context.

    config.py     every key of the experiment, its default and meaning
    nets.py       the video classifiers by name (CLIP-CAER, Former-DFER)
    data.py       RAER as a LightningDataModule (release layout or the embedded synthetic set)
    features.py   the frozen-encoder feature cache
    module.py     the LightningModule: loss, optimiser, UAR/WAR, per-context results
    train.py      train, evaluate, cache, prepare (through the run spine, affectlab.lab.run)
    compare.py    every method x seed as nested runs, the paper's table
    describe.py   class counts and annotator agreement of a RAER folder
"""

from __future__ import annotations

from collections.abc import Sequence

from affectlab.lab.cli import Experiment, main as run_command

EXPERIMENT = Experiment(
    name="raer",
    summary="CLIP-CAER on RAER: academic emotions (Neutrality, Enjoyment, Confusion, Fatigue, Distraction) of students "
            "in classroom video, from the face and the context around it.",
    commands={
        "train": ("affectlab.lab.raer.train:train", "train, select on validation UAR, test the best checkpoint"),
        "evaluate": ("affectlab.lab.raer.train:evaluate", "validation and test metrics of a checkpoint (resume=PATH or "
                                                          "auto), no training"),
        "compare": ("affectlab.lab.raer.compare:compare", "every method of compare.methods x every seed: a parent "
                                                          "run, a child per training, mean ± std"),
        "describe": ("affectlab.lab.raer.describe:describe", "class counts per split and Fleiss' kappa of the votes"),
        "prepare": ("affectlab.lab.raer.train:prepare", "detect faces in your clips (data.root): write "
                                                        "bounding_box/face.json and body.json"),
        "cache": ("affectlab.lab.raer.train:write_cache", "write the face/context crop cache that training reads"),
        "predict": ("affectlab.lab.raer.predict:predict", "a trained model on your videos: predict model=REF "
                                                          "input=PATH [output=DIR] -> predictions.csv, timelines"),
    },
)


def main(argv: Sequence[str]) -> object:
    """Run a command of the experiment from its arguments (``[COMMAND] [config=…] [key=value …]``); errors raise."""
    return run_command(EXPERIMENT, argv)
