"""LLM emotion probing. `lightning run experiments/probing.py [flags] [key=value ...]`; see experiments/configs/probing.yaml."""

from affectlab.lab.probing import main

if __name__ == "__main__":
    main()
