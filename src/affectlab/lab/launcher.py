"""The `lightning` command: `lightning run SCRIPT [--accelerator ...] [--devices N] ... [script args]`.

Lightning 2.6 ships no `lightning` command; its launcher lives on as `fabric run`. This command is that launcher
(it starts the script through torchrun and passes the flags on as LT_* variables, which the experiments read).
"""

from __future__ import annotations


def main() -> None:
    from lightning.fabric.cli import _main

    _main(prog_name="lightning")


if __name__ == "__main__":
    main()
