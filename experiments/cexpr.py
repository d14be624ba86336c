"""Zero-shot compound expressions on C-EXPR-DB (MHPF + PPA/PFSA). `lightning run experiments/cexpr.py [key=value ...]`;
see experiments/configs/cexpr.yaml."""

from affectlab.lab.cexpr import main

if __name__ == "__main__":
    main()
