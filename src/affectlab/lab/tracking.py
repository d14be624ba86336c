"""MLflow set-up shared by every experiment: where runs go and the Lightning logger that writes them."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig


def tracking_uri(configured: str | None, workdir: Path | None = None) -> str:
    """``mlflow.tracking_uri``, else ``MLFLOW_TRACKING_URI``, else an absolute SQLite ``mlflow.db`` in the workdir."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    workdir = (workdir or Path.cwd()).resolve()
    return f"sqlite:///{workdir / 'mlflow.db'}"


def artifact_location(uri: str, workdir: Path | None = None) -> str | None:
    """Artifacts beside a local store go to ``./mlartifacts``; a tracking server keeps its own artifact root."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return ((workdir or Path.cwd()).resolve() / "mlartifacts").as_uri()


class TrackingError(RuntimeError):
    """The MLflow tracking server a run was pointed at cannot be used."""


def check_server(uri: str, timeout: float = 5.0) -> None:
    """A tracking server that does not answer is an error now, before any training time is spent."""
    if not uri.startswith(("http://", "https://")):
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"answered {response.status}"
    except (urllib.error.URLError, OSError) as error:
        problem = f"did not answer ({getattr(error, 'reason', error)})"
    raise TrackingError(
        f"MLflow tracking server {uri} {problem} at {health}; start it (mlflow server --host … --port …), "
        "or set mlflow.tracking_uri=null to log to ./mlflow.db"
    )


def make_logger(cfg: DictConfig, run_id: str | None = None) -> MLFlowLogger | None:
    """The MLflow logger of a run, on global rank 0 only (None elsewhere): one run whatever the processes.

    Even constructing an MlflowClient opens the store, and two processes creating one SQLite schema collide.
    """
    if rank_zero_only.rank != 0:
        return None
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    check_server(uri)
    tags = {str(k): str(v) for k, v in (cfg.mlflow.tags or {}).items()}
    return MLFlowLogger(
        experiment_name=cfg.mlflow.experiment,
        run_name=cfg.mlflow.run_name,
        tracking_uri=uri,
        tags=tags or None,
        artifact_location=artifact_location(uri),
        run_id=run_id,
    )
