"""Parent and child runs: a comparison of methods over seeds (raer compare), trainings over settings and folds (meld),
a modality ablation (cexpr). One MLflow parent run holds the summary; each child is a nested run (tag
``mlflow.parentRunId``), so ``mlflow ui`` shows them side by side. Every write goes through the resilient client of
affectlab.lab.tracking, so a tracking server that goes away costs nothing.

On disk a sweep is a folder under ``checkpoint_dir``: ``run.json`` names the parent run, each child trains in a
subfolder of its own, and a child that was tested leaves ``result.json`` there (its checkpoints are then deleted).
``resume=auto`` continues the newest sweep: finished children are read back, not trained again, and the unfinished
one continues from its newest intact checkpoint into its own MLflow run.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf

from affectlab.datasets.integrity import write_atomic
from affectlab.lab.checkpoints import checkpoint_run_id, new_run_folder, newest_intact, resolve_resume
from affectlab.lab.config import ConfigError, flatten, with_overrides
from affectlab.lab.tracking import ResilientMLFlowLogger, make_logger

RUN_RECORD = "run.json"  # in a sweep's folder: the parent MLflow run id
RESULT = "result.json"  # in a child's folder once it is tested: its metrics (and whatever the sweep keeps)


def slug(name: str) -> str:
    """A child's name as a folder name: "Face only · seed 1" -> "face-only-seed-1"; "meld/text" -> "meld--text"."""
    return re.sub(r"[^A-Za-z0-9/]+", "-", name).strip("-").lower().replace("/", "--")


class Sweep:
    """A parent run and its children; `parent` is None off rank 0 (nothing is logged there)."""

    def __init__(self, cfg: DictConfig, folder: Path, parent: ResilientMLFlowLogger | None, resumed: bool,
                 checkpoint: str | None = None):
        self.cfg, self.folder, self.parent, self.resumed = cfg, folder, parent, resumed
        self.checkpoint = checkpoint  # resume=PATH: the child checkpoint to continue
        self._children: dict[str, str] = {}  # child name -> its MLflow run id

    @classmethod
    def open(cls, cfg: DictConfig, params: Mapping[str, object] | None = None) -> Sweep:
        """``resume``: null (a new sweep), ``auto`` (the newest sweep under ``checkpoint_dir``; a new one when there is
        none) or a child's checkpoint path (its sweep)."""
        root = Path(str(cfg.checkpoint_dir)).expanduser()
        folder, parent_id, checkpoint = None, None, None
        if cfg.resume == "auto":
            records = sorted(root.glob(f"*/{RUN_RECORD}"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
            if records:
                folder = records[0].parent
            else:
                rank_zero_warn(f"resume=auto: no run under {root} to continue; starting a new run")
        elif cfg.resume:
            checkpoint = resolve_resume(str(cfg.resume), root)  # raises on a missing or damaged file
            # the sweep's folder: the nearest above the checkpoint holding run.json (<sweep>/<training>/x.ckpt for
            # meld and probing, <sweep>/<child>/<run>/x.ckpt for raer compare)
            folder = next((p for p in Path(checkpoint).parents if (p / RUN_RECORD).is_file()),
                          Path(checkpoint).parent.parent)
        if folder is not None:
            try:
                parent_id = json.loads((folder / RUN_RECORD).read_text(encoding="utf-8"))["parent_run_id"]
            except (OSError, ValueError, KeyError) as error:
                raise ConfigError(f"resume={cfg.resume!r}: {folder / RUN_RECORD} does not name the run's MLflow run "
                                  f"({error}); expected a checkpoint under {root}/<run>/<training>/") from error
        else:
            folder = _new_folder(root)
        parent = make_logger(cfg, run_id=parent_id)
        if parent is not None and parent_id is None:
            parent.log_hyperparams({**flatten(cfg), **(params or {})})
            record = json.dumps({"parent_run_id": parent.run_id})
            write_atomic(folder / RUN_RECORD, lambda scratch: scratch.write_text(record, encoding="utf-8"))
        return cls(cfg, folder, parent, parent_id is not None, checkpoint)

    # --- children that train -------------------------------------------------------------------------------------

    def child_folder(self, name: str) -> Path:
        return self.folder / slug(name)

    def result(self, name: str) -> dict | None:
        """What a child that was tested before (a resumed sweep) left, or None (always, in a sweep not resumed)."""
        done = self.child_folder(name) / RESULT
        if not self.resumed or not done.is_file():
            return None
        print(f"{name}: tested before the resume ({done}), not trained again", flush=True)
        return json.loads(done.read_text(encoding="utf-8"))

    def save_result(self, name: str, result: Mapping[str, object]) -> None:
        """Keep a tested child's result (rank 0) and delete its checkpoints (a fine-tuned encoder's are ~270 MB)."""
        folder = self.child_folder(name)
        text = json.dumps(dict(result))
        write_atomic(folder / RESULT, lambda scratch: scratch.write_text(text, encoding="utf-8"))
        for stale in folder.rglob("*.ckpt*"):
            stale.unlink(missing_ok=True)

    def continue_from(self, name: str) -> str | None:
        """The checkpoint an unfinished child of a resumed sweep continues from (None: it starts afresh)."""
        folder = self.child_folder(name)
        if self.checkpoint is not None:
            return self.checkpoint if Path(self.checkpoint).parent == folder else None
        if not self.resumed:
            return None
        found = newest_intact(folder.parent) if folder.is_dir() else None
        return str(found) if found is not None and found.parent == folder else None

    def child_logger(self, name: str, checkpoint: str | None, existing: bool = False) -> ResilientMLFlowLogger | None:
        """The MLflow run of a child training: the checkpoint's own run when it continues one, the one already made for
        `name` with `existing`, else a new nested run."""
        if self.parent is None:
            return None
        run_id = checkpoint_run_id(checkpoint) or (self._children.get(name) if existing else None)
        if run_id is None:
            run_id = self.parent.experiment.create_run(
                self.parent.experiment_id, run_name=name, tags={"mlflow.parentRunId": self.parent.run_id}
            ).info.run_id
        self._children[name] = run_id
        return make_logger(self.cfg, run_id=run_id)

    def child_config(self, name: str, overrides: Sequence[str], experiment: str, *, seed: int | None = None,
                     tags: Mapping[str, str] | None = None) -> DictConfig:
        """A child that runs a whole experiment (raer compare): the config with its overrides, its own checkpoint
        folder, resume=auto in a resumed sweep, and the nesting tags."""
        child = with_overrides(self.cfg, overrides, experiment, f"the overrides of {name}")
        if seed is not None:
            child.seed = seed
        child.checkpoint_dir = str(self.child_folder(name))
        child.resume = "auto" if self.resumed else None
        child.mlflow.run_name = name
        inherited = OmegaConf.to_container(self.cfg.mlflow.tags) if self.cfg.mlflow.tags is not None else {}
        parent = {"mlflow.parentRunId": self.parent.run_id} if self.parent is not None else {}
        child.mlflow.tags = {**inherited, **parent, **(tags or {})}
        return child

    # --- children that only report (an ablation) -----------------------------------------------------------------

    def log_child(self, name: str, params: Mapping[str, object], metrics: Mapping[str, float]) -> str | None:
        """A nested run holding metrics computed by the parent (no training of its own); returns its id."""
        if self.parent is None:
            return None
        client = self.parent.experiment
        child = client.create_run(self.parent.experiment_id, run_name=name,
                                  tags={"mlflow.parentRunId": self.parent.run_id}).info.run_id
        for key, value in params.items():
            client.log_param(child, key, value)
        for key, value in metrics.items():
            client.log_metric(child, key, float(value))
        client.set_terminated(child)
        return child

    # --- the parent's summary -------------------------------------------------------------------------------------

    def finish(self, metrics: Mapping[str, float], artifacts: Sequence[Path] = (),
               tables: Mapping[str, dict[str, list]] | None = None, status: str = "FINISHED") -> None:
        """Log the summary metrics, artifacts and tables (name.json -> columns) to the parent run and end it."""
        if self.parent is None:
            return
        from affectlab.lab.run import run_note

        client, run_id = self.parent.experiment, self.parent.run_id
        for key, value in metrics.items():
            client.log_metric(run_id, key, float(value))
        for name, table in (tables or {}).items():
            client.log_table(run_id, data=table, artifact_file=name)
        for path in artifacts:
            client.log_artifact(run_id, str(path))
        if metrics:
            names = [Path(p).name for p in artifacts] + list(tables or {})
            client.set_tag(run_id, "mlflow.note.content", run_note(self.parent.name or "sweep", metrics, names, run_id))
        self.parent.finalize("success" if status == "FINISHED" else "failed")


def _new_folder(root: Path) -> Path:
    """A fresh folder that every process of the run names alike: torchrun's processes share the launch's port and
    their parent, the node's torchrun agent (a later launch on the same port that day has another)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return root / time.strftime(f"%Y%m%d-ddp{os.environ.get('MASTER_PORT', '')}-{os.getppid()}")
    return new_run_folder(root)
