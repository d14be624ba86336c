"""MLflow set-up shared by every experiment: where runs go and the Lightning logger that writes them.

A tracking server that goes away in the middle of a run does not stop it: `ResilientClient` keeps the writes it
could not send (metrics, params, tags, artifacts, the run's end) in order, in memory and in a spool file
(``./mlflow-pending/<run>-<pid>.jsonl``), resends them from a background thread while training goes on, and at the end
waits ``mlflow.wait_at_end`` seconds for the server; what is still unsent then stays in the spool file, with the
command that imports it: ``python -m affectlab.lab.tracking import <file> [--tracking-uri URI]``.
"""

from __future__ import annotations

import argparse
import atexit
import inspect
import json
import os
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
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


PENDING_DIR = "mlflow-pending"


def server_unavailable(error: BaseException) -> bool:
    """True for the errors of a tracking server that cannot be reached or is failing (not for a rejected request)."""
    import requests

    if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return True
    if isinstance(error, requests.exceptions.HTTPError):
        return error.response is None or error.response.status_code >= 500
    if isinstance(error, MlflowException):
        message = str(error)
        return bool(re.search(r"API request to .* failed with (timeout )?exception|failed with error code 5\d\d",
                              message))
    return isinstance(error, (ConnectionError, TimeoutError))


def _encode(value):
    """A write's argument as JSON: MLflow's metric, param and tag entities become tagged objects."""
    if isinstance(value, Metric):
        return {"__metric__": [value.key, value.value, value.timestamp, value.step]}
    if isinstance(value, Param):
        return {"__param__": [value.key, value.value]}
    if isinstance(value, RunTag):
        return {"__tag__": [value.key, value.value]}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _decode(value):
    if isinstance(value, dict):
        if "__metric__" in value:
            key, number, timestamp, step = value["__metric__"]
            return Metric(key, number, timestamp, step)
        if "__param__" in value:
            return Param(*value["__param__"])
        if "__tag__" in value:
            return RunTag(*value["__tag__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class ResilientClient:
    """An MlflowClient whose writes outlive an unreachable tracking server (reads pass straight through).

    While the server answers, a write is sent at once, as MlflowClient would. When one fails because the server cannot
    be reached, it and every later write are queued in order, appended to a spool file, and resent by a background
    thread every `retry_seconds` until the server answers again; then writes go straight through again.
    """

    WRITES = ("log_batch", "log_metric", "log_param", "set_tag", "log_artifact", "log_artifacts", "set_terminated",
              "log_dict", "log_text", "log_table")

    def __init__(self, client: MlflowClient, retry_seconds: float = 10.0, wait_at_end: float = 300.0,
                 spool_dir: Path | None = None):
        self._client = client
        self.retry_seconds, self.wait_at_end = float(retry_seconds), float(wait_at_end)
        self._gave_up = False  # the server did not come back within wait_at_end: no more resending, no more waiting
        self.spool_dir = Path(spool_dir or Path.cwd() / PENDING_DIR).resolve()
        self.spool_file: Path | None = None
        self._queue: list[tuple[int, str, dict]] = []  # (sequence number, method, arguments)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._sender: threading.Thread | None = None
        self._sequence = 0
        self._at_exit = False
        self.queued_total = 0

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "_client":  # copy/pickle probing a half-built object
            raise AttributeError(name)
        attribute = getattr(self._client, name)
        if name in self.WRITES:
            signature = inspect.signature(attribute)
            return lambda *args, **kwargs: self._write(name, signature.bind(*args, **kwargs).arguments)
        return attribute

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _write(self, name: str, arguments: dict):
        with self._lock:
            if not self._queue:
                queue_it = False
            else:
                queue_it = True
                self._enqueue(name, arguments)
        if queue_it:
            return None
        try:
            return getattr(self._client, name)(**arguments)
        except Exception as error:
            if not server_unavailable(error):
                raise
            with self._lock:
                first = not self._queue
                self._enqueue(name, arguments)
            if first:
                warnings.warn(
                    f"MLflow tracking server {self._client.tracking_uri} is unreachable ({str(error)[:300]}); training "
                    f"goes on, its metrics are kept in {self.spool_file} and resent every {self.retry_seconds:g} s",
                    stacklevel=2,
                )
            return None

    def _enqueue(self, name: str, arguments: dict) -> None:
        """Queue a write (the lock is held): artifacts are copied first, since their files may be gone later."""
        self._sequence += 1
        if self.spool_file is None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            run = arguments.get("run_id") or "run"
            self.spool_file = self.spool_dir / f"{run}-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        if name in ("log_artifact", "log_artifacts"):
            source = Path(arguments["local_path" if name == "log_artifact" else "local_dir"])
            target = self.spool_file.with_suffix("") / str(self._sequence) / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                try:
                    os.link(source, target)  # a checkpoint can be large: a hard link when the file system allows
                except OSError:
                    shutil.copy2(source, target)
            arguments = {**arguments, "local_path" if name == "log_artifact" else "local_dir": str(target)}
        self._queue.append((self._sequence, name, arguments))
        self.queued_total += 1
        with self.spool_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"seq": self._sequence, "call": name, "arguments": _encode(arguments)}) + "\n")
        if self._sender is None:  # (the sender clears this under the lock when it leaves: no lost wake-up)
            self._sender = threading.Thread(target=self._send_queued, name="mlflow-resend", daemon=True)
            self._sender.start()
            if not self._at_exit:
                atexit.register(self.close)
                self._at_exit = True
        self._wake.set()

    def _send_queued(self) -> None:
        while True:
            with self._lock:
                if not self._queue or self._gave_up:  # given up: what is left stays in the spool file only
                    self._sender = None
                    return
                sequence, name, arguments = self._queue[0]
            try:
                getattr(self._client, name)(**arguments)
            except Exception as error:
                if server_unavailable(error):
                    self._wake.wait(self.retry_seconds)
                    self._wake.clear()
                    continue
                # the server answered and refused this write: retrying would not help, the next ones go on
                warnings.warn(f"MLflow rejected the buffered {name}: {error}", stacklevel=1)
            with self._lock:
                self._queue.pop(0)
                with self.spool_file.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"sent": sequence}) + "\n")

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the queued writes to be sent; True when none is left."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return not self.pending

    def close(self) -> None:
        """At the end of a run: wait for the server, then say where anything unsent is and how to import it."""
        if self.spool_file is None or not self.spool_file.exists():  # nothing queued, or imported already
            return
        if self.flush(0.0 if self._gave_up else self.wait_at_end):
            if self.spool_file.exists():
                self.spool_file.unlink()
                shutil.rmtree(self.spool_file.with_suffix(""), ignore_errors=True)
            self.spool_file = None
            return
        message = (
            f"MLflow tracking server {self._client.tracking_uri} did not come back: {self.pending} writes of this run "
            f"are kept in {self.spool_file}. When the server is up, import them with:\n"
            f"    python -m affectlab.lab.tracking import {self.spool_file} --tracking-uri {self._client.tracking_uri}"
        )
        self._gave_up = True
        print(message, file=sys.stderr)


def import_pending(spool_file: str | Path, uri: str) -> int:
    """Send the writes of a spool file that were not sent to the tracking server at `uri`; returns their number."""
    spool_file = Path(spool_file)
    calls, sent = {}, set()
    for line in spool_file.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if "sent" in entry:
            sent.add(entry["sent"])
        else:
            calls[entry["seq"]] = entry
    client = MlflowClient(uri)
    todo = [calls[s] for s in sorted(calls) if s not in sent]
    for entry in todo:
        getattr(client, entry["call"])(**_decode(entry["arguments"]))
    spool_file.rename(spool_file.with_name(spool_file.name + ".imported"))
    return len(todo)


class ResilientMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger through a `ResilientClient`: an unreachable server costs no metrics and no training."""

    def __init__(self, *args, retry_seconds: float = 10.0, wait_at_end: float = 300.0, **kwargs):
        super().__init__(*args, **kwargs)
        self._mlflow_client = ResilientClient(self._mlflow_client, retry_seconds, wait_at_end)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if not self._initialized:
            return
        status = {"success": "FINISHED", "finished": "FINISHED", "failed": "FAILED"}.get(status, status)
        # unlike MLFlowLogger.finalize, no read of the run first: it would fail while the server is away
        self.experiment.set_terminated(self.run_id, status)
        self._mlflow_client.close()


def make_logger(cfg: DictConfig, run_id: str | None = None) -> ResilientMLFlowLogger | None:
    """The MLflow logger of a run, on global rank 0 only (None elsewhere): one run whatever the processes.

    Even constructing an MlflowClient opens the store, and two processes creating one SQLite schema collide.
    """
    if rank_zero_only.rank != 0:
        return None
    uri = tracking_uri(cfg.mlflow.tracking_uri)
    check_server(uri)
    tags = {str(k): str(v) for k, v in (cfg.mlflow.tags or {}).items()}
    # ResilientClient retries on its own: MLflow's own retries (7, up to minutes) would only stall the training
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    pending = sorted(Path(PENDING_DIR).glob("*.jsonl"))
    if pending:
        print(f"{len(pending)} file(s) of MLflow writes from earlier runs were never sent, e.g. {pending[0]}; import "
              f"them with: python -m affectlab.lab.tracking import <file> --tracking-uri {uri}", file=sys.stderr)
    return ResilientMLFlowLogger(
        experiment_name=cfg.mlflow.experiment,
        run_name=cfg.mlflow.run_name,
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
