"""Experiment configuration: one schema per experiment, named YAML variants, ``key=value`` overrides, all checked first.

- The schema (``affectlab.lab.<experiment>.config``) is a tree of dataclasses: every key with its default, its type and
  a one-line meaning (`key`), nested sections as `section` fields. It is the defaults of the experiment; ``--help``
  prints it.
- A YAML file in ``experiments/configs/`` (``config=raer_paper``) or anywhere (``config=path.yaml``) holds only what
  differs from the defaults; ``inherits: NAME`` stacks one on another (``inherits: raer`` is the schema itself).
- ``key=value`` arguments come last. Every key of every file and argument is checked against the schema before any
  data is read: an unknown key (with the closest valid ones), a value of the wrong type or outside its range. All the
  problems are reported at once, one line each, as one `ConfigError`.

Two groups are open: keys under a ``dict`` field (``mlflow.tags.<name>``) and ``trainer.*``, which also takes any
other keyword argument of ``lightning.pytorch.Trainer``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import inspect
import os
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[3] / "experiments" / "configs"
SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"  # ../shared/data beside the project

# Flags of `lightning run` reach the script through the environment that Lightning's launcher sets.
LAUNCHER_ENV = {
    "LT_ACCELERATOR": "accelerator",
    "LT_STRATEGY": "strategy",
    "LT_DEVICES": "devices",
    "LT_NUM_NODES": "num_nodes",
    "LT_PRECISION": "precision",
}


class ConfigError(ValueError):
    """A configuration the user wrote that cannot be run; each line of the message is one problem."""


def key(default: Any, help: str, *, min: float | None = None, max: float | None = None,
        choices: Callable[[], Sequence[str]] | None = None) -> Any:
    """A config key of a schema dataclass: its default and one-line meaning; ``min``/``max`` bound a number, and
    ``choices`` returns the names a registry accepts (called only when the key is checked, so that --help stays fast)."""
    meta = {"help": help, "min": min, "max": max, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, help: str = "", **defaults: Any) -> Any:
    """A nested section of a schema (a dataclass of its own keys), with defaults of its own for some keys."""
    return field(default_factory=lambda: cls(**defaults), metadata={"help": help})


# --- sections every experiment shares ---------------------------------------------------------------------------------


@dataclass
class CheckpointEvery:
    steps: int | None = key(None, "a mid-epoch checkpoint (step-latest.ckpt) every this many training steps", min=1)
    minutes: float | None = key(10, "... or, when steps is null, every this many minutes of training (both null: "
                                     "checkpoints at epoch ends only)", min=0.001)


def _trainer_keywords() -> set[str]:
    from lightning.pytorch import Trainer

    return {name for name in inspect.signature(Trainer.__init__).parameters if name != "self"}


@dataclass
class TrainerConfig:
    """Keyword arguments of lightning.pytorch.Trainer (any other one may be given too: trainer.<name>=value)."""

    max_epochs: int = key(20, "epochs of training", min=0)
    accelerator: str = key("auto", "cpu | gpu | cuda | mps | auto")
    devices: Any = key(1, "processes on this node: a number, -1 or auto (all GPUs), or GPU indices like [0,1]")
    strategy: str = key("auto", "auto | ddp | fsdp | deepspeed...: how the processes share the work")
    num_nodes: int = key(1, "machines taking part in one run", min=1)
    precision: str = key("32-true", "32-true | 16-mixed | bf16-mixed | ...; one the hardware cannot run is an error")
    log_every_n_steps: int = key(10, "training steps between logged points", min=1)
    enable_progress_bar: bool = key(True, "a progress bar over the batches")
    enable_model_summary: bool = key(False, "print the model's layers and sizes before training")

    OPEN = staticmethod(_trainer_keywords)  # other keys of this section: any Trainer keyword


@dataclass
class MlflowConfig:
    tracking_uri: str | None = key(None, "null: sqlite:///<cwd>/mlflow.db (or $MLFLOW_TRACKING_URI); "
                                         "http://host:port for a tracking server")
    experiment: str = key("affectlab", "the MLflow experiment the run goes to")
    run_name: str | None = key(None, "the run's name in the MLflow UI; null: <experiment>-<date>-<time>")
    tags: dict[str, Any] = key({}, "tags of the run (mlflow.tags.<name>=value)")
    retry_seconds: float = key(10, "a server that went away mid-run: writes are kept and resent this often", min=0.1)
    wait_at_end: float = key(300, "seconds the run waits at its end for such a server; then the unsent writes stay in "
                                  "./mlflow-pending/ (python -m affectlab.lab.tracking import <file>)", min=0)


# --- the schema as paths ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One key of a schema: its dotted path, type, default and meaning (a section is a Spec with `section` set)."""

    path: str
    hint: Any
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: Callable[[], Sequence[str]] | None = None
    section: type | None = None


def specs(schema: type, prefix: str = "", instance: Any = None) -> Iterator[Spec]:
    """Every section and key of a schema dataclass, depth first, in declaration order, with the defaults of
    `instance` (the schema's own defaults when None)."""
    instance = schema() if instance is None else instance
    hints = typing.get_type_hints(type(instance))
    for item in dataclasses.fields(instance):
        path, hint = f"{prefix}{item.name}", hints[item.name]
        default = getattr(instance, item.name)
        meta = item.metadata
        if dataclasses.is_dataclass(hint):
            yield Spec(path, hint, None, meta.get("help", ""), section=hint)
            yield from specs(hint, f"{path}.", default)
        else:
            yield Spec(path, hint, default, meta.get("help", ""), meta.get("min"), meta.get("max"), meta.get("choices"))


def defaults(schema: type) -> DictConfig:
    return OmegaConf.create(dataclasses.asdict(schema()))


def _describe(hint: Any) -> str:
    """What a type hint accepts, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "any value"
    if origin is Literal:
        return "one of " + " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {_plural(args[0]) if args else 'values'}"
    if origin is dict or hint is dict:
        return "a mapping"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "a text"}.get(hint, str(hint))


def _plural(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " | ".join(str(a) for a in typing.get_args(hint))
    return {int: "whole numbers", float: "numbers", str: "texts", bool: "true/false values"}.get(hint, _describe(hint))


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, (list, ListConfig)) and all(_fits(v, args[0]) for v in value) if args else \
            isinstance(value, (list, ListConfig))
    if origin is dict or hint is dict:
        return isinstance(value, (dict, DictConfig))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)  # 2024 as a run name
    return isinstance(value, hint)


def check_value(spec: Spec, value: Any, shown: str) -> str | None:
    """Why `value` does not suit the key, as one line; None when it does."""
    bounds = ""
    if spec.min is not None and spec.max is not None:
        bounds = f" in [{spec.min:g}, {spec.max:g}]"
    elif spec.min is not None:
        bounds = f" >= {spec.min:g}"
    elif spec.max is not None:
        bounds = f" <= {spec.max:g}"
    hint, nullable = spec.hint, False
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        hint, nullable = (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    expected = _describe(hint) + bounds + (", or null" if nullable else "")
    if not _fits(value, spec.hint):
        return f"{spec.path}={shown}: expected {expected}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
            return f"{spec.path}={shown}: expected {expected}"
    if spec.choices is not None and value is not None:
        names = list(spec.choices())
        values = value if isinstance(value, (list, ListConfig)) else [value]
        wrong = [v for v in values if v not in names]
        if wrong:
            close = difflib.get_close_matches(str(wrong[0]), [str(n) for n in names], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"{spec.path}={shown}: expected one of {', '.join(map(str, names))}{hint}"
    return None


class Checker:
    """Checks (key, value) pairs against one schema and collects every problem."""

    def __init__(self, schema: type, source: str):
        self.by_path = {spec.path: spec for spec in specs(schema)}
        self.source = source
        self.problems: list[str] = []

    def _open_parent(self, path: str) -> Spec | None:
        """The open section that takes `path` as one of its own keys (a dict key, or a Trainer keyword)."""
        parent, _, name = path.rpartition(".")
        while parent:
            spec = self.by_path.get(parent)
            if spec is not None:
                if spec.section is None and _fits({}, spec.hint) and typing.get_origin(spec.hint) is dict:
                    return spec
                opener = getattr(spec.section, "OPEN", None) if spec.section is not None else None
                if opener is not None and "." not in path[len(parent) + 1:] and name in opener():
                    return spec
                return None
            parent, _, _ = parent.rpartition(".")
        return None

    def check(self, path: str, value: Any, shown: str | None = None) -> None:
        shown = _show(value) if shown is None else shown
        spec = self.by_path.get(path)
        if spec is None:
            if self._open_parent(path) is not None:
                return
            leaves = [p for p, s in self.by_path.items() if s.section is None]
            close = difflib.get_close_matches(path, leaves, n=3, cutoff=0.8) or \
                difflib.get_close_matches(path, leaves, n=1, cutoff=0.6)
            if path.startswith("trainer."):
                hint = " (not a key of the schema nor a keyword of lightning.pytorch.Trainer)"
            else:
                hint = ""
            suggestion = f"; did you mean {', '.join(close)}?" if close else f"{hint}; see --help for the keys"
            self.problems.append(f"unknown key {path!r} in {self.source}{suggestion}")
            return
        if spec.section is not None:
            if not isinstance(value, (dict, DictConfig)):
                self.problems.append(f"{path}={shown}: a section; set its keys ({path}.<key>=value)")
                return
            for name, item in value.items():
                self.check(f"{path}.{name}", item)
            return
        problem = check_value(spec, value, shown)
        if problem:
            self.problems.append(problem + ("" if self.source == "the command line" else f" (in {self.source})"))


    def parse(self, items: Sequence[str]) -> list[DictConfig]:
        """``key=value`` items as configs to merge, each checked; a malformed one is a problem, not merged."""
        where = "" if self.source == "the command line" else f" (in {self.source})"
        parsed = []
        for item in items:
            if "=" not in item:
                self.problems.append(f"{item!r} is not of the form key=value (e.g. trainer.max_epochs=5){where}")
                continue
            path, text = item.split("=", 1)
            path = path.lstrip("+")
            try:
                value = OmegaConf.from_dotlist([f"{path}={text}"])
            except Exception as error:  # unbalanced brackets, say
                self.problems.append(f"{path}={text}: cannot be parsed ({str(error).splitlines()[0]}){where}")
                continue
            self.check(path, OmegaConf.select(value, path), text)
            parsed.append(value)
        return parsed


def _show(value: Any) -> str:
    """A value as it is written on the command line."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in node.items():
        path = f"{prefix}{name}"
        if isinstance(value, (dict, DictConfig)) and value:
            yield from _leaves(value, f"{path}.")
        else:
            yield path, value


# --- loading ----------------------------------------------------------------------------------------------------------


def config_dir() -> Path:
    """The experiments' YAML folder; ``AFFECTLAB_CONFIG_DIR`` points elsewhere (an installed copy, say)."""
    return Path(os.environ.get("AFFECTLAB_CONFIG_DIR", CONFIG_DIR))


def schema_of(experiment: str) -> type:
    """The schema dataclass of an experiment (``affectlab.lab.<experiment>.config.SCHEMA``)."""
    try:
        return importlib.import_module(f"affectlab.lab.{experiment}.config").SCHEMA
    except ModuleNotFoundError:
        raise ConfigError(f"no experiment named {experiment!r}; expected raer, cexpr, meld or probing") from None


def variants(experiment: str) -> list[str]:
    """The named YAML variants of an experiment: files in the config folder whose chain inherits from it."""
    found = []
    for path in sorted(config_dir().glob("*.yaml")):
        try:
            chain = _chain(path, experiment)
            named = chain is not None and "inherits" in OmegaConf.load(chain[0][0])
        except ConfigError:
            continue
        if named:
            found.append(path.stem)
    return found


def _named(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config={name}: the file does not exist")
        return path
    path = config_dir() / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in config_dir().glob("*.yaml"))
        raise ConfigError(f"config={name}: no such config in {config_dir()}; known: {', '.join(known)}")
    return path


def _chain(path: Path, experiment: str, seen: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]] | None:
    """The YAML files from the schema down to `path` ([(file, its keys)]), or None when the chain ends elsewhere."""
    try:
        data = OmegaConf.load(path)
    except Exception as error:  # a YAML syntax error: name the file
        raise ConfigError(f"{path}: cannot be read as YAML: {error}") from error
    parent = data.pop("inherits", experiment)
    if parent == experiment:
        return [(path, data)]
    parent_path = _named(str(parent))
    if parent_path.resolve() in seen or parent_path.resolve() == path.resolve():
        raise ConfigError(f"{path}: `inherits: {parent}` makes a cycle")
    chain = _chain(parent_path, experiment, seen + (path.resolve(),))
    return None if chain is None else chain + [(path, data)]


def load_config(experiment: str, argv: Sequence[str] = (), environ: dict[str, str] | None = None) -> DictConfig:
    """The experiment's schema defaults, with the YAML of ``config=NAME|PATH`` (and those it inherits) and then
    ``argv``'s ``key=value`` applied, every key checked first (one ConfigError listing every problem).

    The flags of ``lightning run`` (``--accelerator``, ``--devices``, …), which its launcher passes on as ``LT_*``
    variables, override ``trainer.*`` last: they also decided how many processes were started.
    """
    environ = os.environ if environ is None else environ
    schema = schema_of(experiment)
    cfg = defaults(schema)
    argv = list(argv)
    chosen = [a.split("=", 1)[1] for a in argv if a.startswith("config=")]
    problems: list[str] = []
    name = chosen[-1] if chosen else experiment
    if name != experiment:
        chain = _chain(_named(name), experiment)
        if chain is None:
            raise ConfigError(f"config={name}: it is not a configuration of {experiment} (its `inherits:` chain does "
                              f"not lead to {experiment}); known: {', '.join(variants(experiment))}")
        for path, data in chain:
            checker = Checker(schema, str(path))
            for leaf, value in _leaves(data):
                checker.check(leaf, value)
            problems += checker.problems
            cfg = OmegaConf.merge(cfg, data)
    checker = Checker(schema, "the command line")
    parsed = checker.parse([item for item in argv if not item.startswith("config=")])
    problems += checker.problems
    if problems:
        raise ConfigError("\n".join(problems))
    for value in parsed:
        cfg = OmegaConf.merge(cfg, value)
    for variable, trainer_key in LAUNCHER_ENV.items():
        if environ.get(variable):
            value = environ[variable]
            cfg.trainer[trainer_key] = int(value) if value.isdigit() else value
    OmegaConf.resolve(cfg)
    return cfg


def help_lines(schema: type) -> list[tuple[str, str, str]]:
    """(key, default, meaning) of every key of a schema, for --help."""
    rows = []
    for spec in specs(schema):
        if spec.section is not None:
            continue
        rows.append((spec.path, _show(spec.default), spec.help))
    return rows


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, object]:
    """``{"data.root": ..., "optim.lr.prompt": ...}``: the config as MLflow params."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else cfg
    flat: dict[str, object] = {}
    for name, value in container.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, prefix=f"{path}."))
        else:
            flat[path] = value
    return flat


def with_overrides(cfg: DictConfig, overrides: Sequence[str], experiment: str, source: str) -> DictConfig:
    """`cfg` with ``key=value`` overrides (a sweep's per-method settings), checked as the command line's are."""
    checker = Checker(schema_of(experiment), source)
    parsed = checker.parse(overrides)
    if checker.problems:
        raise ConfigError("\n".join(checker.problems))
    return OmegaConf.merge(cfg, *parsed) if parsed else cfg.copy()
