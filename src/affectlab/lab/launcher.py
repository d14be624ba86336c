"""The `lightning` command: `lightning run [--accelerator ...] [--devices N] ... SCRIPT [script args]`.

Lightning 2.6 ships no `lightning` command; its launcher lives on as `fabric run`. This command is that launcher
(it starts the script through torchrun and passes the flags on as LT_* variables, which the experiments read).
Before any process starts, the flags are checked against this machine (`affectlab.lab.hardware.check_launch`): a GPU
that is not there, a precision or strategy the hardware cannot run or a node rank outside the node count is an error
naming the flag, the value and what is valid (exit code 2), not a traceback from every process later.
`lightning run SCRIPT --help` prints the script's own help (its commands and config keys) without starting anything.
When a process of the script fails, the command exits with its exit code; the process has said why (an expected
error is its one line), so torchrun's traceback and failure report are shown only with --debug or AFFECTLAB_DEBUG=1.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

from affectlab.lab.hardware import LaunchError, check_launch

_NODE_FLAGS = ("--num-nodes", "--num_nodes")
_PORT_FLAGS = ("--main-port", "--main_port")


RUN_HELP = """usage: lightning run [FLAGS] SCRIPT [COMMAND] [config=NAME|PATH] [key=value ...]

affectlab's runner: Lightning's launcher (`fabric run`), which starts SCRIPT once per device through torchrun, with
the flags checked against this machine first. The experiments read the flags as their trainer.* settings.

  SCRIPT                       experiments/raer.py, cexpr.py, meld.py or probing.py
                               (`lightning run SCRIPT --help`: its commands and config keys)
  --accelerator cpu|gpu|auto   the hardware (trainer.accelerator)
  --devices N                  processes on this node: GPUs, or CPU processes (trainer.devices)
  --strategy ddp|fsdp|...      how the processes share the work (trainer.strategy)
  --num-nodes N                machines taking part (trainer.num_nodes)
  --node-rank R                this machine's index, 0..N-1
  --main-address H             the address of node 0
  --main-port P                its port (one node: a free port is chosen)
  --precision P                32-true | 16-mixed | bf16-mixed | ... (trainer.precision)

A flag this machine cannot run (a GPU that is not there, bf16 without support, a node rank out of range) is an error
before any process starts. Example: lightning run --devices 2 --strategy ddp experiments/raer.py trainer.max_epochs=5
"""


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


def check_run_arguments(argv: list[str]) -> None:
    """``lightning run``'s flags parsed as Lightning parses them, then checked (LaunchError). A flag Lightning
    itself rejects (``--main-port abc``, an unknown precision name) is left to its own message."""
    import click
    from lightning.fabric.cli import _main

    try:
        ctx = _main.commands["run"].make_context("lightning run", list(argv[1:]))
    except click.exceptions.Exit:  # --help
        return
    except click.ClickException:
        return
    p = ctx.params
    check_launch(accelerator=p["accelerator"], devices=p["devices"], strategy=p["strategy"],
                 precision=p["precision"], num_nodes=p["num_nodes"], node_rank=p["node_rank"],
                 main_port=p["main_port"])


_VALUE_FLAGS = ("--accelerator", "--strategy", "--devices", *_NODE_FLAGS, "--node-rank", "--node_rank",
                "--main-address", "--main_address", *_PORT_FLAGS, "--precision")


def split_run(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """``run``'s arguments as (launcher flags, SCRIPT, the script's own arguments)."""
    flags, position = [], 1
    while position < len(argv):
        arg = argv[position]
        if not arg.startswith("-"):
            return flags, arg, argv[position + 1:]
        flags.append(arg)
        if arg in _VALUE_FLAGS and position + 1 < len(argv):
            flags.append(argv[position + 1])
            position += 1
        position += 1
    return flags, None, []


def main() -> None:
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(RUN_HELP, end="")
        return
    if argv[0] == "run":
        flags, script, script_args = split_run(argv)
        if script is None or any(flag in ("-h", "--help") for flag in flags):
            print(RUN_HELP, end="")
            raise SystemExit(0 if script is not None or flags else 2)
        if any(arg in ("-h", "--help") for arg in script_args):  # the script's help: nothing to launch
            raise SystemExit(subprocess.call([sys.executable, script, *script_args]))
    from lightning.fabric.cli import _main

    argv = with_free_port(argv)
    if argv[0] == "run":
        try:
            check_run_arguments(argv)
        except LaunchError as error:
            print(f"lightning run: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
    if "--debug" in argv or os.environ.get("AFFECTLAB_DEBUG", "") not in ("", "0"):
        _main(args=argv, prog_name="lightning")
        return
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its "failed (exitcode: 1)" line
    try:
        _main(args=argv, prog_name="lightning")
    except ChildFailedError as failed:
        raise SystemExit(child_exit_code(failed, script=split_run(argv)[1])) from None


def child_exit_code(failed, script: str | None) -> int:
    """The exit code of the first failed process. A process that exited with a code said why itself; one killed by
    a signal could not, so that gets a line here."""
    rank, failure = min(failed.failures.items())
    if failure.exitcode < 0:
        print(f"lightning run: error: {script}: process of rank {rank} was killed by signal {failure.signal_name()} "
              f"(exit code {failure.exitcode}); --debug shows torchrun's report", file=sys.stderr)
        return 1
    return failure.exitcode


if __name__ == "__main__":
    main()
