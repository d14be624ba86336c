"""The command line of every experiment: ``python experiments/X.py [COMMAND] [config=NAME|PATH] [key=value ...]``
(or the same after ``lightning run [flags]``).

- ``--help`` lists the commands and every config key with its default and meaning, from the schema, without
  importing torch (a second or so).
- The config is loaded and checked (affectlab.lab.config) before the command imports anything heavy.
- An error the user can cause (a config key, a dataset file, a model name, the tracking server, a full disk) prints
  one line per problem and exits non-zero, without a traceback; ``--debug`` (or ``AFFECTLAB_DEBUG=1``) shows it.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from affectlab.lab.config import ConfigError, help_lines, load_config, variants

# Exceptions a user's input or machine can cause, by the module and name of their type: the packages define their
# own (no common base, they are installed separately), and naming them here keeps --help free of their imports.
EXPECTED = {
    ("affectlab.lab.config", "ConfigError"),  # and its subclasses (hardware's LaunchError, ...): the MRO is walked
    ("affectlab.lab.resilient", "TrackingError"),
    ("affectlab.datasets.errors", "DatasetError"),
    ("affectlab.datasets.integrity", "DiskFullError"),
    ("affectlab.models.errors", "ModelError"),
    ("affectlab.fusion.mhpf", "MhpfError"),
    ("affectlab.fusion.textualize", "CueTableError"),
    ("affectlab.probing.extract", "ExtractionError"),
    ("affectlab.probing.cache", "CacheMismatchError"),
}


@dataclass(frozen=True)
class Experiment:
    """An experiment's command line: its name (the config schema is ``affectlab.lab.<name>.config``), one line on
    what it does, and its commands: name -> ("module:function" taking the loaded config, one-line meaning)."""

    name: str
    summary: str
    commands: dict[str, tuple[str, str]]
    default_command: str = "train"
    shorthand: tuple[str, ...] = ("predict",)  # commands whose own section's keys may be given without it
                                               # (`predict model=REF input=PATH` for predict.model, predict.input)


def expected(error: BaseException) -> bool:
    """True for an error the user can fix from its message alone (no traceback needed)."""
    for kind in type(error).__mro__:
        if (kind.__module__, kind.__name__) in EXPECTED:
            return True
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "database or disk is full" in str(error)  # SQLite's words, through MLflow's store


def help_text(experiment: Experiment, prog: str) -> str:
    from affectlab.lab.config import schema_of

    width = 118
    lines = [
        f"usage: python {prog} [COMMAND] [config=NAME|PATH] [key=value ...] [--debug]",
        f"       lightning run [--devices N --accelerator gpu ...] {prog} [COMMAND] [key=value ...]",
        "",
        experiment.summary,
        "",
        "commands:",
    ]
    for name, (_, meaning) in experiment.commands.items():
        default = " (default)" if name == experiment.default_command else ""
        lines.append(f"  {name:<10} {meaning}{default}")
    named = variants(experiment.name)
    lines += ["", "configs: the defaults below" + (f"; config={'|'.join(named)} (experiments/configs/)" if named else "")
              + "; or config=PATH to your own YAML (inherits: " + experiment.name + ", then only what differs)", ""]
    rows = help_lines(schema_of(experiment.name))
    key_width = min(38, max(len(k) for k, _, _ in rows) + 1)
    lines.append("keys (key=value; default; meaning):")
    for path, default, meaning in rows:
        default = default if len(default) <= 24 else default[:21] + "..."
        head = f"  {path:<{key_width}} {default:<24} "
        wrapped = textwrap.wrap(meaning, width - len(head)) or [""]
        lines.append(head + wrapped[0])
        lines.extend(" " * len(head) + more for more in wrapped[1:])
    lines += ["", "An unknown key, a wrong type or a value out of range is reported before any data is read. "
              "--debug shows the traceback of an error."]
    return "\n".join(lines)


def with_section(experiment: str, section: str, argv: Sequence[str]) -> list[str]:
    """``key=value`` of a key of the command's own section, given without it, as ``section.key=value``."""
    from affectlab.lab.config import schema_of, specs

    own = {spec.path.split(".", 1)[1] for spec in specs(schema_of(experiment)) if spec.path.startswith(f"{section}.")}
    out = []
    for item in argv:
        key = item.split("=", 1)[0]
        out.append(f"{section}.{item}" if "=" in item and key in own else item)
    return out


def main(experiment: Experiment, argv: Sequence[str]) -> object:
    """Run ``argv`` (``[COMMAND] [config=…] [key=value …]``); errors are raised (`console` prints them)."""
    argv = [a for a in argv if a != "--debug"]
    command = experiment.default_command
    if argv and "=" not in argv[0]:
        if argv[0] not in experiment.commands:
            close = difflib.get_close_matches(argv[0], list(experiment.commands), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"unknown command {argv[0]!r}{hint} (commands: {', '.join(experiment.commands)}; "
                              "settings are key=value)")
        command, argv = argv[0], argv[1:]
    if command in experiment.shorthand:
        argv = with_section(experiment.name, command, argv)
    cfg = load_config(experiment.name, argv)
    target, _ = experiment.commands[command]
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)(cfg)


def console(experiment: Experiment, argv: Sequence[str] | None = None) -> None:
    """The entry scripts' main: help, then `main`, expected errors as one line each (exit 2 for the configuration,
    1 otherwise)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.relpath(sys.argv[0]) if sys.argv and sys.argv[0].endswith(".py") else f"experiments/{experiment.name}.py"
    if any(a in ("-h", "--help") for a in argv):
        try:
            print(help_text(experiment, prog))
        except BrokenPipeError:  # piped into head: the rest is not wanted
            sys.stderr.close()
        return
    debug = "--debug" in argv or os.environ.get("AFFECTLAB_DEBUG", "") not in ("", "0")
    try:
        main(experiment, argv)
    except BaseException as error:
        if debug or not expected(error):
            raise
        lines = str(error).splitlines() or [type(error).__name__]
        if "database or disk is full" in str(error) and not isinstance(error, OSError):
            lines = [f"disk full: the MLflow store could not be written ({lines[0][:200]}); free some space and run "
                     "again (resume=auto continues a training)"]
        for line in lines:
            print(f"{experiment.name}: error: {line}", file=sys.stderr)
        raise SystemExit(2 if isinstance(error, ConfigError) else 1) from None
