"""Zero-shot compound expressions on C-EXPR-DB (MHPF + PPA/PFSA): `python experiments/cexpr.py [COMMAND] [key=value
...]`, or after `lightning run`; `--help` lists the commands and every config key (src/affectlab/lab/cexpr/config.py)."""

from affectlab.lab.cli import console
from affectlab.lab.cexpr import EXPERIMENT

if __name__ == "__main__":
    console(EXPERIMENT)
