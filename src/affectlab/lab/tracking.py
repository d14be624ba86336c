"""MLflow set-up shared by every experiment: where runs go, the store made ready once (a new local store from an
empty one already migrated, under a file lock, so that two runs started at once cannot race MLflow's schema
migration), and the Lightning logger that writes through the resilient client (affectlab.lab.resilient): a tracking
server that goes away mid-run costs no metrics. ``python -m affectlab.lab.tracking import <file> [--tracking-uri URI]``
sends what a run could not.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import mlflow
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from affectlab.datasets.generated import cache_root
from affectlab.datasets.integrity import write_atomic
from affectlab.lab.resilient import _OUTBOXES, PENDING_DIR, ResilientClient, TrackingError, import_pending


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


class _Locked:
    """An exclusive lock on a file for the time of a with block (fcntl: released by the OS if the process dies)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.path.open("a")
        fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _empty_store() -> Path:
    """An empty SQLite store with MLflow's schema (its migrations take seconds), made once per MLflow version."""
    template = cache_root() / f"mlflow-empty-store-{mlflow.__version__}.db"
    with _Locked(template.with_name(template.name + ".lock")):
        if not template.is_file():
            scratch = Path(tempfile.mkdtemp(dir=template.parent)) / "store.db"
            MlflowClient(f"sqlite:///{scratch}").search_experiments(max_results=1)
            os.replace(scratch, template)
            shutil.rmtree(scratch.parent, ignore_errors=True)
    return template


def prepare_store(uri: str) -> None:
    """Make a local SQLite store ready before any run logs to it, under a file lock beside it: two runs started at once
    on a new mlflow.db would otherwise both run MLflow's schema migration and one would crash ("duplicate column").
    A new store is a copy of an empty one already migrated (its Default experiment pointed beside it); an older one
    is upgraded once, here."""
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri[len("sqlite:///"):])
    with _Locked(path.with_name(path.name + ".lock")):
        if not path.is_file() or path.stat().st_size == 0:
            empty = _empty_store()

            def fresh(scratch: Path) -> None:
                shutil.copyfile(empty, scratch)
                with closing(sqlite3.connect(scratch)) as store, store:  # MLflow would have put Default's artifacts
                    store.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",  # beside it
                                  ((path.parent / "mlruns").resolve().as_uri(),))

            write_atomic(path, fresh)
        MlflowClient(uri).search_experiments(max_results=1)


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


class ResilientMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger through a `ResilientClient`: an unreachable server costs no metrics and no training."""

    def __init__(self, *args, retry_seconds: float = 10.0, wait_at_end: float = 300.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._mlflow_client = ResilientClient(self._mlflow_client, retry_seconds, wait_at_end)
        self._mlflow_client._box.open_loggers += 1
        self._open = True

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if not self._initialized:
            return
        status = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}.get(status, status)
        # unlike MLFlowLogger.finalize, no read of the run first: it would fail while the server is away
        self.experiment.set_terminated(self.run_id, status)
        box = self._mlflow_client._box
        if self._open:
            box.open_loggers, self._open = box.open_loggers - 1, False
        if box.open_loggers <= 0:  # a nested run's end does not wait for the server: its parent's end will
            self._mlflow_client.close()


def log_dataset(logger: ResilientMLFlowLogger | None, name: str, source: str, rows: int, context: str = "train",
                digest: str | None = None, toy: bool = False) -> None:
    """Record on the run what data it read (MLflow's dataset inputs, shown on the run page): a name, where it came
    from, how many rows, and whether it is a toy stand-in, whose figures mean nothing."""
    if logger is None:
        return
    from mlflow.entities import Dataset, DatasetInput, InputTag

    profile = json.dumps({"rows": int(rows), "toy": bool(toy)})
    digest = digest or hashlib.sha256(f"{name}|{source}|{rows}".encode()).hexdigest()[:8]
    dataset = Dataset(name=name, digest=digest, source_type="local" if "://" not in source else "external",
                      source=json.dumps({"uri": source}), profile=profile)
    tags = [InputTag("mlflow.data.context", context)] + ([InputTag("toy", "true")] if toy else [])
    logger.experiment.log_inputs(logger.run_id, datasets=[DatasetInput(dataset, tags)])
    logger.experiment.set_tag(logger.run_id, f"data.{context}", f"{name} ({rows} rows{', TOY' if toy else ''}): {source}")


def make_logger(cfg: DictConfig, run_id: str | None = None) -> ResilientMLFlowLogger | None:
    """The MLflow logger of a run, on global rank 0 only (None elsewhere): one run whatever the processes.

    Even constructing an MlflowClient opens the store, and two processes creating one SQLite schema collide.
    """
    if rank_zero_only.rank != 0:
        return None
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    if not any(server == uri for server, _ in _OUTBOXES):  # a process's first run; a nested one goes on regardless
        check_server(uri)
        prepare_store(uri)
    tags = {str(k): str(v) for k, v in (cfg.mlflow.tags or {}).items()}
    # ResilientClient retries on its own: MLflow's own retries (7, up to minutes) would only stall the training
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    pending = sorted(Path(PENDING_DIR).glob("*.jsonl"))
    if pending:
        print(f"{len(pending)} file(s) of MLflow writes from earlier runs were never sent, e.g. {pending[0]}; import "
              f"them with: python -m affectlab.lab.tracking import <file> --tracking-uri {uri}", file=sys.stderr)
    return ResilientMLFlowLogger(
        experiment_name=cfg.mlflow.experiment,
        # MLflow's generated names come from the `random` module the run has just seeded: every run would get the same
        run_name=cfg.mlflow.run_name or f"{cfg.mlflow.experiment}-{time.strftime('%Y%m%d-%H%M%S')}",
        tracking_uri=uri,
        tags=tags or None,
        artifact_location=artifact_location(uri),
        run_id=run_id,
        retry_seconds=cfg.mlflow.get("retry_seconds", 10),
        wait_at_end=cfg.mlflow.get("wait_at_end", 300),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m affectlab.lab.tracking")
    commands = parser.add_subparsers(dest="command", required=True)
    replay = commands.add_parser("import", help="send the unsent MLflow writes of a spool file (./mlflow-pending/)")
    replay.add_argument("spool_file")
    replay.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    args = parser.parse_args(argv)
    uri = tracking_uri(args.tracking_uri)
    count = import_pending(args.spool_file, uri)
    print(f"{count} MLflow writes imported into {uri}")


if __name__ == "__main__":
    main()
