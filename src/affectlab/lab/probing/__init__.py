"""LLM emotion probing ("Decoding Emotion in the Deep"): hidden states of a language model probed layer by layer
for emotions; probes against zero-shot prompting; malleability under system prompts; persistence over a reply.

    config.py    every key of the experiment, its default and meaning
    data.py      the corpus, the model, the cached hidden states, their datamodule
    module.py    the LightningModule training every layer's probe
    studies.py   zero-shot prompting, malleability, persistence
    train.py     the run through the spine, the per-layer report
"""

from __future__ import annotations

from collections.abc import Sequence

from affectlab.lab.cli import Experiment, main as run_command

EXPERIMENT = Experiment(
    name="probing",
    summary="LLM emotion probing: hidden states of any Hugging Face model probed layer by layer for 7 emotions; "
            "zero-shot prompting, malleability under system prompts, persistence over a reply.",
    commands={
        "train": ("affectlab.lab.probing.train:train", "extract (or reuse) features, train and test every layer's "
                                                       "probe, report"),
    },
)


def main(argv: Sequence[str]) -> object:
    """Run a command of the experiment from its arguments (``[COMMAND] [config=…] [key=value …]``); errors raise."""
    return run_command(EXPERIMENT, argv)
