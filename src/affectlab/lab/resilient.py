"""MLflow writes that outlive an unreachable tracking server.

`ResilientClient` keeps the writes it could not send (metrics, params, tags, artifacts, the run's end) in order, in
memory and in a spool file (``./mlflow-pending/<run>-<pid>.jsonl``), resends them from a background thread while
training goes on, and at the end waits ``mlflow.wait_at_end`` seconds for the server; what is still unsent then stays
in the spool file, with the command that imports it: ``python -m affectlab.lab.tracking import <file>``.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunData, RunInfo, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


class TrackingError(RuntimeError):
    """The MLflow tracking server a run was pointed at cannot be used."""


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
    if isinstance(value, DatasetInput):
        d = value.dataset
        return {"__dataset_input__": [[d.name, d.digest, d.source_type, d.source, d.schema, d.profile],
                                      [[t.key, t.value] for t in value.tags]]}
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
        if "__dataset_input__" in value:
            fields, tags = value["__dataset_input__"]
            return DatasetInput(Dataset(*fields), [InputTag(*tag) for tag in tags])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


OFFLINE_PREFIX = "offline-"  # the id of a run created while the server was away, until the server gives it its own


def _translate(value, run_ids: dict):
    """`value` with every offline run id that the server has since created replaced by the server's id."""
    if isinstance(value, str):
        return run_ids.get(value) or value
    if isinstance(value, dict):
        return {k: _translate(v, run_ids) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_translate(v, run_ids) for v in value)
    return value


def _offline_ids(value) -> set[str]:
    if isinstance(value, str):
        return {value} if value.startswith(OFFLINE_PREFIX) else set()
    if isinstance(value, dict):
        return set().union(*(_offline_ids(v) for v in value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(_offline_ids(v) for v in value)) if value else set()
    return set()


class _Outbox:
    """The writes of one process to one tracking server that could not be sent yet, shared by every ResilientClient
    of that server in the process (so that a nested run created during an outage is created before its writes)."""

    def __init__(self, client: MlflowClient, retry_seconds: float, wait_at_end: float, spool_dir: Path):
        self.client = client
        self.retry_seconds, self.wait_at_end = float(retry_seconds), float(wait_at_end)
        self.spool_dir = spool_dir
        self.spool_file: Path | None = None
        self.queue: list[tuple[int, str, dict]] = []  # (sequence number, method, arguments)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.sender: threading.Thread | None = None
        self.sequence = 0
        self.at_exit = False
        self.gave_up = False  # the server did not come back within wait_at_end: no more resending, no more waiting
        self.queued_total = 0
        self.open_loggers = 0  # loggers of this server not finalized yet: only the last one waits for the server
        self.run_ids: dict[str, str | None] = {}  # offline run id -> the server's id (None until created)
        self.offline_runs: dict[str, Run] = {}

    def spool(self, entry: dict) -> None:
        with self.spool_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


_OUTBOXES: dict[tuple[str, Path], _Outbox] = {}
_OUTBOXES_LOCK = threading.Lock()


class ResilientClient:
    """An MlflowClient whose writes outlive an unreachable tracking server (reads pass straight through).

    While the server answers, a write is sent at once, as MlflowClient would. When one fails because the server cannot
    be reached, it and every later write are queued in order, appended to a spool file, and resent by a background
    thread every `retry_seconds` until the server answers again; then writes go straight through again. A run created
    meanwhile (`create_run`, e.g. a nested run) gets an offline id (``offline-…``) at once; it is created when the
    server is back and its writes then go to the server's id. The clients of one server in a process share the queue.
    """

    WRITES = ("log_batch", "log_metric", "log_param", "set_tag", "log_artifact", "log_artifacts", "set_terminated",
              "log_dict", "log_text", "log_table", "create_run", "log_inputs")

    def __init__(self, client: MlflowClient, retry_seconds: float = 10.0, wait_at_end: float = 300.0,
                 spool_dir: Path | None = None):
        self._client = client
        spool_dir = Path(spool_dir or Path.cwd() / PENDING_DIR).resolve()
        with _OUTBOXES_LOCK:
            key = (str(client.tracking_uri), spool_dir)
            if key not in _OUTBOXES:
                _OUTBOXES[key] = _Outbox(client, retry_seconds, wait_at_end, spool_dir)
            self._box = _OUTBOXES[key]

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("_client", "_box"):  # copy/pickle probing a half-built object
            raise AttributeError(name)
        attribute = getattr(self._client, name)
        if not callable(attribute):  # tracking_uri and other plain values
            return attribute
        signature = inspect.signature(attribute)
        if name in self.WRITES:
            return lambda *args, **kwargs: self._write(name, signature.bind(*args, **kwargs).arguments)

        def read(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs).arguments
            if not self._box.run_ids or not _offline_ids(arguments):
                return attribute(**arguments)
            with self._box.lock:
                arguments = _translate(arguments, self._box.run_ids)
                offline = _offline_ids(arguments)
            if name == "get_run" and offline:  # not created yet: what is known of it here
                return self._box.offline_runs[arguments["run_id"]]
            if offline:
                raise TrackingError(f"MLflow run {sorted(offline)[0]} was created while the tracking server was away "
                                    f"and is not on the server yet; {name} cannot read it")
            return attribute(**arguments)

        return read

    @property
    def spool_file(self) -> Path | None:
        return self._box.spool_file

    @property
    def spool_dir(self) -> Path:
        return self._box.spool_dir

    @property
    def queued_total(self) -> int:
        return self._box.queued_total

    @property
    def pending(self) -> int:
        with self._box.lock:
            return len(self._box.queue)

    def _write(self, name: str, arguments: dict):
        box = self._box
        with box.lock:
            if box.run_ids:  # (only after a run was created offline: no walk over every write's arguments before)
                if any(box.run_ids.get(i) is None for i in _offline_ids(arguments)):
                    return self._enqueue(name, arguments)  # its run is not on the server yet
                arguments = _translate(arguments, box.run_ids)
            if box.queue:
                return self._enqueue(name, arguments)
        try:
            return getattr(self._client, name)(**arguments)
        except Exception as error:
            if not server_unavailable(error):
                raise
            with box.lock:
                first = not box.queue
                result = self._enqueue(name, arguments)
            if first:
                warnings.warn(
                    f"MLflow tracking server {self._client.tracking_uri} is unreachable ({str(error)[:300]}); training "
                    f"goes on, its metrics are kept in {box.spool_file} and resent every {box.retry_seconds:g} s",
                    stacklevel=2,
                )
            return result

    def _enqueue(self, name: str, arguments: dict):
        """Queue a write (the lock is held): artifacts are copied first, since their files may be gone later; a run
        to create gets its offline id, and the offline Run is returned."""
        box = self._box
        box.sequence += 1
        if box.spool_file is None:
            box.spool_dir.mkdir(parents=True, exist_ok=True)
            run = arguments.get("run_id") or "run"
            box.spool_file = box.spool_dir / f"{run}-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        result = None
        if name in ("log_artifact", "log_artifacts"):
            source = Path(arguments["local_path" if name == "log_artifact" else "local_dir"])
            target = box.spool_file.with_suffix("") / str(box.sequence) / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                try:
                    os.link(source, target)  # a checkpoint can be large: a hard link when the file system allows
                except OSError:
                    shutil.copy2(source, target)
            arguments = {**arguments, "local_path" if name == "log_artifact" else "local_dir": str(target)}
        if name == "create_run":
            offline = OFFLINE_PREFIX + uuid.uuid4().hex
            start = arguments.get("start_time") or int(time.time() * 1000)
            arguments = {**arguments, "start_time": start, "offline_id": offline}
            tags = [RunTag(str(k), str(v)) for k, v in (arguments.get("tags") or {}).items()]
            result = Run(RunInfo(offline, str(arguments["experiment_id"]), "", "RUNNING", start, None, "active",
                                 run_name=arguments.get("run_name")), RunData(tags=tags))
            box.run_ids[offline] = None
            box.offline_runs[offline] = result
        box.queue.append((box.sequence, name, arguments))
        box.queued_total += 1
        box.spool({"seq": box.sequence, "call": name, "arguments": _encode(arguments)})
        if box.sender is None:  # (the sender clears this under the lock when it leaves: no lost wake-up)
            box.sender = threading.Thread(target=_send_queued, args=(box,), name="mlflow-resend", daemon=True)
            box.sender.start()
            if not box.at_exit:
                atexit.register(self.close)
                box.at_exit = True
        box.wake.set()
        return result

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the queued writes to be sent; True when none is left."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self._box.wake.set()
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return not self.pending

    def close(self) -> None:
        """At the end of a run: wait for the server, then say where anything unsent is and how to import it."""
        box = self._box
        if box.spool_file is None or not box.spool_file.exists():  # nothing queued, or imported already
            return
        if self.flush(0.0 if box.gave_up else box.wait_at_end):
            with box.lock:
                if box.spool_file is not None and box.spool_file.exists() and not box.queue:
                    box.spool_file.unlink()
                    shutil.rmtree(box.spool_file.with_suffix(""), ignore_errors=True)
                    box.spool_file = None
            return
        message = (
            f"MLflow tracking server {self._client.tracking_uri} did not come back: {self.pending} writes of this run "
            f"are kept in {box.spool_file}. When the server is up, import them with:\n"
            f"    python -m affectlab.lab.tracking import {box.spool_file} --tracking-uri {self._client.tracking_uri}"
        )
        box.gave_up = True
        print(message, file=sys.stderr)


def _call(client: MlflowClient, name: str, arguments: dict, run_ids: dict) -> str | None:
    """Send one queued write with the server's run ids; for a run created offline, returns the server's id."""
    arguments = _translate(arguments, run_ids)
    offline = arguments.pop("offline_id", None)
    result = getattr(client, name)(**arguments)
    return result.info.run_id if offline else None


def _send_queued(box: _Outbox) -> None:
    while True:
        with box.lock:
            if not box.queue or box.gave_up:  # given up: what is left stays in the spool file only
                box.sender = None
                return
            sequence, name, arguments = box.queue[0]
            run_ids = dict(box.run_ids)
        created = None
        try:
            created = _call(box.client, name, arguments, run_ids)
        except Exception as error:
            if server_unavailable(error):
                box.wake.wait(box.retry_seconds)
                box.wake.clear()
                continue
            # the server answered and refused this write: retrying would not help, the next ones go on
            warnings.warn(f"MLflow rejected the buffered {name}: {error}", stacklevel=1)
        with box.lock:
            box.queue.pop(0)
            if created is not None:
                box.run_ids[arguments["offline_id"]] = created
                box.spool({"created": arguments["offline_id"], "run_id": created})
            box.spool({"sent": sequence})


def import_pending(spool_file: str | Path, uri: str) -> int:
    """Send the writes of a spool file that were not sent to the tracking server at `uri`; returns their number.
    Runs created while the server was away are created first, and their writes go to the server's ids."""
    spool_file = Path(spool_file)
    calls, sent, run_ids = {}, set(), {}
    for line in spool_file.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if "sent" in entry:
            sent.add(entry["sent"])
        elif "created" in entry:
            run_ids[entry["created"]] = entry["run_id"]
        else:
            calls[entry["seq"]] = entry
    client = MlflowClient(uri)
    todo = [calls[s] for s in sorted(calls) if s not in sent]
    for entry in todo:
        arguments = _decode(entry["arguments"])
        created = _call(client, entry["call"], arguments, run_ids)
        if created is not None:
            run_ids[arguments["offline_id"]] = created
    spool_file.rename(spool_file.with_name(spool_file.name + ".imported"))
    return len(todo)
