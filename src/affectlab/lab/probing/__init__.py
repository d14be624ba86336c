"""LLM emotion probing ("Decoding Emotion in the Deep"): hidden states of a language model probed layer by layer
for emotions on your corpus's train/validation/test splits; probes against baselines and zero-shot prompting;
emotion directions, trajectories and steering; malleability under system prompts; persistence over a reply.

    config.py      every key of the experiment, its default and meaning
    data.py        the splits, the model, the cached hidden states, the MLP's datamodule
    module.py      the LightningModule training the MLP probes with early stopping per layer
    evaluation.py  per-layer metrics with intervals, baselines, the best layer, the table and figures
    studies.py     trajectories, steering, zero-shot prompting, malleability, persistence
    predict.py     the probes' bundle (an MLflow model), the Predictor and the predict command
    train.py       the run, top to bottom
"""

from __future__ import annotations

from collections.abc import Sequence

from affectlab.lab.cli import Experiment, main as run_command

EXPERIMENT = Experiment(
    name="probing",
    summary="LLM emotion probing: hidden states of any Hugging Face model probed layer by layer for the emotions of "
            "your corpus (MELD, GoEmotions, LLM-Emotion, your files); baselines, emotion directions, steering; "
            "zero-shot prompting, malleability under system prompts, persistence over a reply.",
    commands={
        "train": ("affectlab.lab.probing.train:train", "extract (or reuse) features, train every layer's probe on "
                                                       "train, select on validation, report on test"),
        "predict": ("affectlab.lab.probing.predict:predict", "texts -> every layer's probe probabilities and the best "
                                                             "layer's per-token trajectories (model=REF input=PATH)"),
    },
)


def main(argv: Sequence[str]) -> object:
    """Run a command of the experiment from its arguments (``[COMMAND] [config=…] [key=value …]``); errors raise."""
    return run_command(EXPERIMENT, argv)
