"""CLIP-CAER on RAER: `python experiments/raer.py [COMMAND] [key=value ...]`, or after `lightning run [flags]`;
`--help` lists the commands and every config key (src/affectlab/lab/raer/config.py)."""

from affectlab.lab.cli import console
from affectlab.lab.raer import EXPERIMENT

if __name__ == "__main__":
    console(EXPERIMENT)
