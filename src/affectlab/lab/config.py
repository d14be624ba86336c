"""Experiment configuration: an omegaconf YAML under ``experiments/configs/`` plus ``key=value`` overrides.

Every key an override may set is a key of the YAML, except two open groups: ``trainer.*`` (any keyword argument of
the Lightning Trainer) and ``mlflow.tags.*``. A key that is neither is an error that names the closest valid keys.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parents[3] / "experiments" / "configs"

# Flags of `lightning run` reach the script through the environment that Lightning's launcher sets.
LAUNCHER_ENV = {
    "LT_ACCELERATOR": "accelerator",
    "LT_STRATEGY": "strategy",
    "LT_DEVICES": "devices",
    "LT_NUM_NODES": "num_nodes",
    "LT_PRECISION": "precision",
}
OPEN_GROUPS = ("mlflow.tags",)


class ConfigError(ValueError):
    """A configuration the user wrote that cannot be run."""


def config_dir() -> Path:
    """The experiments' YAML folder; ``AFFECTLAB_CONFIG_DIR`` points elsewhere (an installed copy, say)."""
    return Path(os.environ.get("AFFECTLAB_CONFIG_DIR", CONFIG_DIR))


def _leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg.keys():
        path = f"{prefix}{key}"
        value = cfg._get_node(key)
        if isinstance(value, DictConfig) and path not in OPEN_GROUPS:
            keys.append(path)
            keys.extend(_leaf_keys(value, prefix=f"{path}."))
        else:
            keys.append(path)
    return keys


def _trainer_keys() -> set[str]:
    from lightning.pytorch import Trainer

    return {name for name in inspect.signature(Trainer.__init__).parameters if name != "self"}


def _check_keys(base: DictConfig, overrides: Sequence[str], source: str) -> None:
    valid = _leaf_keys(base)
    valid_set = set(valid)
    trainer_keys = _trainer_keys()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. trainer.max_epochs=5)")
        key = item.split("=", 1)[0].lstrip("+")
        if key in valid_set or any(key.startswith(f"{group}.") for group in OPEN_GROUPS):
            continue
        if key.startswith("trainer."):
            name = key.split(".", 1)[1]
            if name in trainer_keys:
                continue
            close = difflib.get_close_matches(name, sorted(trainer_keys), n=3)
            raise ConfigError(
                f"unknown key {key!r}: not an argument of lightning.pytorch.Trainer"
                + (f"; did you mean {', '.join('trainer.' + c for c in close)}?" if close else "")
            )
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys of {source} are {', '.join(valid)}"
        raise ConfigError(f"unknown key {key!r} (not in {source}){hint}")


def _base_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    path = config_dir() / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in config_dir().glob("*.yaml"))
        raise ConfigError(f"no config named {name!r} in {config_dir()}; known: {', '.join(known)}")
    return path


def _load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """A YAML config; one with ``inherits: NAME`` is that config with this file's keys merged over it."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # a YAML syntax error: name the file
        raise ConfigError(f"{path}: cannot be read as YAML: {error}") from error
    parent = cfg.pop("inherits", None)
    if parent is None:
        return cfg
    parent_path = _base_path(parent)
    if parent_path.resolve() in seen:
        raise ConfigError(f"{path}: `inherits: {parent}` makes a cycle")
    base = _load_yaml(parent_path, seen + (path.resolve(),))
    _check_keys(base, [f"{k}=" for k in _leaf_keys(cfg) if not isinstance(OmegaConf.select(cfg, k), DictConfig)], str(path))
    return OmegaConf.merge(base, cfg)


def load_config(default: str, argv: Sequence[str] = (), environ: dict[str, str] | None = None) -> DictConfig:
    """The base YAML ``default`` (or the one ``config=NAME|PATH`` names), with ``argv``'s ``key=value`` applied.

    The flags of ``lightning run`` (``--accelerator``, ``--devices``, …), which its launcher passes on as ``LT_*``
    variables, override ``trainer.*`` last: they also decided how many processes were started.
    """
    environ = os.environ if environ is None else environ
    argv = list(argv)
    chosen = [a.split("=", 1)[1] for a in argv if a.startswith("config=")]
    overrides = [a for a in argv if not a.startswith("config=")]
    base_path = _base_path(chosen[-1] if chosen else default)
    base = _load_yaml(base_path)
    _check_keys(base, overrides, str(base_path))
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))
    except Exception as error:
        raise ConfigError(f"cannot apply overrides {overrides}: {error}") from error
    for variable, key in LAUNCHER_ENV.items():
        if environ.get(variable):
            value = environ[variable]
            cfg.trainer[key] = int(value) if value.isdigit() else value
    cfg.config_file = str(base_path)
    OmegaConf.resolve(cfg)
    return cfg


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, object]:
    """``{"data.root": ..., "optim.lr.prompt": ...}``: the config as MLflow params."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else cfg
    flat: dict[str, object] = {}
    for key, value in container.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, prefix=f"{path}."))
        else:
            flat[path] = value
    return flat
