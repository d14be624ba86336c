"""CLIP-CAER on RAER. `lightning run experiments/raer.py [flags] [key=value ...]`; see experiments/configs/raer.yaml."""

from affectlab.lab.raer import main

if __name__ == "__main__":
    main()
