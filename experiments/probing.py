"""LLM emotion probing: `python experiments/probing.py [COMMAND] [key=value ...]`, or after `lightning run`; `--help`
lists the commands and every config key (src/affectlab/lab/probing/config.py)."""

from affectlab.lab.cli import console
from affectlab.lab.probing import EXPERIMENT

if __name__ == "__main__":
    console(EXPERIMENT)
