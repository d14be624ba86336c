"""Textualized vs feature-based emotion recognition on MELD and C-EXPR-DB: `python experiments/meld.py [COMMAND]
[key=value ...]`, or after `lightning run`; `--help` lists the commands and every config key
(src/affectlab/lab/meld/config.py)."""

from affectlab.lab.cli import console
from affectlab.lab.meld import EXPERIMENT

if __name__ == "__main__":
    console(EXPERIMENT)
