"""Textualized vs feature-based multimodal emotion recognition on MELD and C-EXPR-DB.
`lightning run experiments/meld.py [key=value ...]`; see experiments/configs/meld.yaml."""

from affectlab.lab.meld import main

if __name__ == "__main__":
    main()
