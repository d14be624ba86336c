"""A trained model as something to use: a bundle on disk, an MLflow model (pyfunc) registered by name, and the one
way to find a model from what a user types (``model=REF``).

- A **bundle** is a folder: ``affectlab.json`` (the experiment, its classes, the resolved config, the architecture,
  what each weight file holds) and the weight files (``torch.save`` of tensors only: read with weights_only). Every
  experiment's predictor (``affectlab.lab.<experiment>.predict``) builds itself from one.
- `log_model` logs a bundle as an MLflow pyfunc model (signature, input example, the bundle as its artifact) and
  registers it as ``affectlab-<experiment>``; `AffectlabModel` is that pyfunc: ``mlflow.pyfunc.load_model(
  "models:/affectlab-raer/latest").predict(frame)`` in a fresh process needs only this project installed, and
  ``mlflow models serve -m models:/affectlab-raer/latest --env-manager local`` answers on /invocations.
- `resolve` turns a REF into a bundle folder: a checkpoint (``.ckpt``), a bundle folder, an MLflow run id,
  ``runs:/<id>/model``, ``models:/NAME/VERSION|ALIAS`` (``latest`` too), or nothing: the newest registered version.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

from affectlab.lab.config import ConfigError

BUNDLE_FILE = "affectlab.json"
ARTIFACT = "model"  # the artifact path of a run's MLflow model
PREDICTORS = {name: f"affectlab.lab.{name}.predict" for name in ("raer", "cexpr", "meld", "probing")}


class ModelNotFoundError(ConfigError):
    """A model=REF that names nothing that exists."""


def registered_name(experiment: str) -> str:
    return f"affectlab-{experiment}"


@dataclass(frozen=True)
class Bundle:
    """A trained model on disk: its folder and what affectlab.json says of it."""

    folder: Path
    meta: dict

    @property
    def experiment(self) -> str:
        return self.meta["experiment"]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def file(self, name: str) -> Path:
        return self.folder / self.meta["files"][name]


def write_bundle(folder: Path, experiment: str, classes: Sequence[str], config: Mapping, files: Mapping[str, object],
                 **extra) -> Bundle:
    """Write a bundle: `files` maps a name to a state dict (saved as ``<name>.pt``) or an existing file (copied)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for name, value in files.items():
        if isinstance(value, (str, Path)):
            target = folder / Path(value).name
            shutil.copyfile(value, target)
        else:
            target = folder / f"{name}.pt"
            torch.save(value, target)
        names[name] = target.name
    meta = {"experiment": experiment, "classes": list(classes), "config": dict(config), "files": names, **extra}
    (folder / BUNDLE_FILE).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
    return Bundle(folder, meta)


def read_bundle(folder: str | Path) -> Bundle:
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        nested = list(folder.rglob(BUNDLE_FILE))  # an MLflow model folder holds the bundle among its artifacts
        if not nested:
            raise ModelNotFoundError(f"{folder}: no {BUNDLE_FILE}; expected a model folder this project wrote")
        path = nested[0]
    return Bundle(path.parent, json.loads(path.read_text(encoding="utf-8")))


def predictor_of(bundle: Bundle):
    """The experiment's predictor built from a bundle (``affectlab.lab.<experiment>.predict.Predictor``)."""
    if bundle.experiment not in PREDICTORS:
        raise ModelNotFoundError(f"{bundle.folder}: a model of {bundle.experiment!r}; expected one of {list(PREDICTORS)}")
    return importlib.import_module(PREDICTORS[bundle.experiment]).Predictor.from_bundle(bundle)


class AffectlabModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc of every experiment: a DataFrame in (a ``path`` or a ``text`` column), the predictions out
    (one row per window or text, a probability column per class, the label) as the predict command writes them."""

    def load_context(self, context) -> None:
        self.predictor = predictor_of(read_bundle(context.artifacts["bundle"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return self.predictor.predict_frame(pd.DataFrame(model_input))


def log_model(logger, bundle: Bundle, input_example: pd.DataFrame, output_columns: Sequence[tuple[str, str]],
              input_columns: Sequence[tuple[str, str, bool]], register: bool = True) -> str | None:
    """Log `bundle` to the run of `logger` as an MLflow pyfunc model (artifact ``model``), with its signature (input
    columns: name, type, required; output columns: name, type) and input example, and register it as
    ``affectlab-<experiment>``; returns the model's URI (None off rank 0, and None with a warning when the tracking
    server cannot be reached: the training's result stands, its checkpoint is the model)."""
    if logger is None:
        return None
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from affectlab.lab.resilient import OFFLINE_PREFIX, server_unavailable

    inputs = Schema([ColSpec(kind, name, required=required) for name, kind, required in input_columns])
    outputs = Schema([ColSpec(kind, name) for name, kind in output_columns])
    previous = mlflow.get_tracking_uri()
    quiet = logging.getLogger("mlflow.utils.environment")  # "cannot resolve pip's version": no pip in a uv venv
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # (setLevel, not .level =: it clears logging's cache of enabled levels)
    try:
        run_id = logger.run_id
        if str(run_id).startswith(OFFLINE_PREFIX):  # created during an outage: the server has no such run yet
            _not_registered(bundle, f"its MLflow run {run_id} was created while the tracking server was away")
            return None
        mlflow.set_tracking_uri(logger.experiment.tracking_uri)
        with mlflow.start_run(run_id=run_id, nested=True):
            info = mlflow.pyfunc.log_model(
                name=ARTIFACT, python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
                artifacts={"bundle": str(bundle.folder)},
                signature=ModelSignature(inputs=inputs, outputs=outputs), input_example=input_example,
                registered_model_name=registered_name(bundle.experiment) if register else None,
                pip_requirements=[],
            )
    except Exception as error:
        if not server_unavailable(error):
            raise
        _not_registered(bundle, f"the tracking server cannot be reached ({str(error).splitlines()[0][:200]})")
        return None
    finally:
        mlflow.set_tracking_uri(previous)
        quiet.setLevel(level)
    return info.model_uri


def _not_registered(bundle: Bundle, why: str) -> None:
    checkpoint = bundle.meta.get("checkpoint")
    use = f"model={checkpoint}" if checkpoint else "model=<the run's checkpoint under checkpoint_dir>"
    warnings.warn(f"the {bundle.experiment} model was not logged or registered in MLflow: {why}; use {use} instead",
                  stacklevel=3)


def example_clip(folder: Path, size: int = 64, frames: int = 24) -> Path:
    """A tiny Motion-JPEG clip of a drawn pattern, the input example a logged video model carries (read from the
    model's own folder when a path is not found: ``example.avi``)."""
    from affectlab.datasets.video import write_mjpeg_avi

    yy, xx = np.mgrid[0:size, 0:size]
    images = []
    for k in range(frames):
        frame = np.full((size, size, 3), 40 + 4 * k % 200, dtype=np.uint8)
        frame[((yy - size / 2) ** 2 + (xx - size / 2 - k % 5) ** 2) < (size / 4) ** 2] = (200, 160, 130)
        images.append(frame)
    return write_mjpeg_avi(folder / "example.avi", images, fps=8)


_RUN_ID = re.compile(r"[0-9a-f]{32}")


def resolve(ref: str | None, experiment: str, tracking_uri: str) -> Path:
    """The bundle folder a REF names (downloaded from MLflow when needed); a ModelNotFoundError naming the REF when
    it names nothing."""
    from mlflow.exceptions import MlflowException

    if ref is not None and Path(str(ref)).expanduser().exists():
        path = Path(str(ref)).expanduser()
        if path.suffix == ".ckpt":
            return checkpoint_bundle(path, experiment)
        return read_bundle(path).folder
    if ref is not None and str(ref).endswith((".ckpt", ".pth", ".pt")):
        raise ModelNotFoundError(f"model={ref}: no such checkpoint file")
    if ref is None:
        uri = f"models:/{registered_name(experiment)}/latest"
    elif _RUN_ID.fullmatch(str(ref)):
        uri = f"runs:/{ref}/{ARTIFACT}"
    elif str(ref).startswith(("models:/", "runs:/")):
        uri = str(ref)
    else:
        raise ModelNotFoundError(f"model={ref}: not a checkpoint, a model folder, an MLflow run id, runs:/<id>/model "
                                 f"or models:/NAME/VERSION|ALIAS")
    mlflow.set_tracking_uri(tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per file, for a few files
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(_scratch("affectlab-model-")))
    except (MlflowException, OSError) as error:
        hint = (f"no model is registered as {registered_name(experiment)} in {tracking_uri} yet: train one, or give "
                f"model=<checkpoint | run id | models:/NAME/VERSION>" if ref is None else str(error).splitlines()[0])
        raise ModelNotFoundError(f"model={ref or uri}: {hint}") from None
    return read_bundle(local).folder


def checkpoint_bundle(path: Path, experiment: str) -> Path:
    """A bundle made from one of this project's Lightning checkpoints (its ``affectlab`` record and state dict)."""
    from affectlab.lab.checkpoints import load_checkpoint

    checkpoint = load_checkpoint(path)
    record = checkpoint.get("affectlab")
    if record is None:
        raise ModelNotFoundError(f"model={path}: the checkpoint has no affectlab record (config, classes, "
                                 "architecture); expected a checkpoint this project's training wrote")
    if record["experiment"] != experiment:
        raise ModelNotFoundError(f"model={path}: a checkpoint of {record['experiment']!r}, not of {experiment!r}")
    folder = _scratch("affectlab-bundle-")
    files = {"weights": checkpoint["state_dict"]}
    extra = {k: v for k, v in record.items() if k not in ("experiment", "classes", "config")}
    return write_bundle(folder, experiment, record["classes"], record["config"], files, **extra).folder


def _scratch(prefix: str) -> Path:
    """A temporary folder for a model the process reads until it ends (a predictor loads its files lazily), removed
    when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, True)
    return folder
