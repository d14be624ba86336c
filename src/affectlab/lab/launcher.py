"""The `lightning` command: `lightning run SCRIPT [--accelerator ...] [--devices N] ... [script args]`.

Lightning 2.6 ships no `lightning` command; its launcher lives on as `fabric run`. This command is that launcher
(it starts the script through torchrun and passes the flags on as LT_* variables, which the experiments read).
"""

from __future__ import annotations

import socket
import sys

_NODE_FLAGS = ("--num-nodes", "--num_nodes")
_PORT_FLAGS = ("--main-port", "--main_port")


def _flag_value(argv: list[str], names: tuple[str, ...]) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def with_free_port(argv: list[str]) -> list[str]:
    """On one node without --main-port, use a free port rather than Lightning's fixed 29400, so that two runs on
    one machine do not collide. Several nodes must agree on a port, so there the user's (or the default) stands."""
    if not argv or argv[0] != "run" or _flag_value(argv, _PORT_FLAGS) is not None:
        return argv
    if (_flag_value(argv, _NODE_FLAGS) or "1") != "1":
        return argv
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return [argv[0], "--main-port", str(port), *argv[1:]]


def main() -> None:
    from lightning.fabric.cli import _main

    _main(args=with_free_port(sys.argv[1:]), prog_name="lightning")


if __name__ == "__main__":
    main()
