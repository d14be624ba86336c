"""`python experiments/raer.py compare [key=value ...]`: the paper's comparison table in one command.

Every method of ``compare.methods`` (a name and the ``key=value`` overrides that make it from the config) is trained
and tested once per seed of ``compare.seeds``. MLflow gets one parent run holding the table (mean ± std of test UAR
and WAR per method) and one nested child run per method and seed, so ``mlflow ui`` compares them side by side.
"""

from __future__ import annotations

import csv
import os
import re
import statistics
import tempfile
from pathlib import Path

from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from affectlab.lab.config import ConfigError, _check_keys, flatten
from affectlab.lab.raer import run
from affectlab.lab.tracking import artifact_location, tracking_uri

METRICS = ("test/uar", "test/war")


def method_config(cfg: DictConfig, method: str, overrides: list[str], seed: int, parent_run_id: str) -> DictConfig:
    """The config of one child run: `cfg` with the method's overrides, the seed, and MLflow nesting tags."""
    _check_keys(cfg, overrides, f"compare.methods.{method}")
    child = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    child.seed = seed
    child.resume = None
    slug = re.sub(r"[^A-Za-z0-9]+", "-", method).strip("-").lower()
    child.checkpoint_dir = str(Path(cfg.checkpoint_dir) / "compare" / f"{slug}-seed{seed}")
    child.mlflow.run_name = f"{method} · seed {seed}"
    inherited = OmegaConf.to_container(cfg.mlflow.tags) if cfg.mlflow.tags is not None else {}
    child.mlflow.tags = {**inherited, "mlflow.parentRunId": parent_run_id,
                         "method": method, "seed": str(seed)}
    return child


def summarise(results: dict[str, list[dict[str, float]]]) -> list[dict]:
    """Per method: the number of seeds and the mean and sample standard deviation of each metric over them."""
    rows = []
    for method, runs in results.items():
        row = {"method": method, "seeds": len(runs)}
        for metric in METRICS:
            values = [r[metric] for r in runs]
            row[f"{metric}_mean"] = statistics.fmean(values)
            row[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def print_table(rows: list[dict], console: Console | None = None) -> Table:
    """UAR and WAR in percent as mean ± std per method, as the paper prints them."""
    table = Table(title="RAER test, mean ± std over seeds")
    table.add_column("method")
    table.add_column("seeds", justify="right")
    for metric in METRICS:
        table.add_column(metric.split("/")[1].upper() + " (%)", justify="right")
    for row in rows:
        cells = [f"{100 * row[f'{m}_mean']:.2f} ± {100 * row[f'{m}_std']:.2f}" for m in METRICS]
        table.add_row(row["method"], str(row["seeds"]), *cells)
    (console or Console()).print(table)
    return table


def compare(cfg: DictConfig) -> list[dict]:
    """Train and test every chosen method with every seed; returns the summary rows (also logged to MLflow)."""
    methods = OmegaConf.to_container(cfg.compare.methods)
    chosen = list(cfg.compare.only) if cfg.compare.only else list(methods)
    unknown = [m for m in chosen if m not in methods]
    if unknown or not chosen:
        raise ConfigError(f"compare.only={chosen}: unknown method(s) {unknown}; expected names of compare.methods "
                          f"{list(methods)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or str(cfg.trainer.devices) not in ("1", "auto"):
        # every process (or Lightning's re-launched script) would run the whole comparison again
        raise ConfigError("compare trains its runs one after another in one process; launch it with "
                          "`python experiments/raer.py compare` and trainer.devices=1 (one GPU or the CPU)")
    seeds = [int(s) for s in cfg.compare.seeds]
    if not seeds:
        raise ConfigError("compare.seeds is empty; expected at least one seed")

    uri = tracking_uri(cfg.mlflow.tracking_uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        cfg.mlflow.experiment, artifact_location=artifact_location(uri))
    tags = {str(k): str(v) for k, v in (cfg.mlflow.tags or {}).items()}
    parent = client.create_run(experiment_id, run_name=cfg.mlflow.run_name or "comparison", tags=tags)
    parent_id = parent.info.run_id
    # the shared config, less the per-method knobs that the children log themselves
    shared = {k: v for k, v in flatten(cfg).items() if not k.startswith("compare.methods")}
    params = [Param(k, str(v)) for k, v in shared.items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per call
        client.log_batch(parent_id, params=params[start : start + 100])

    results: dict[str, list[dict[str, float]]] = {}
    try:
        for method in chosen:
            for seed in seeds:
                metrics = run(method_config(cfg, method, list(methods[method]), seed, parent_id))
                results.setdefault(method, []).append(metrics)
        rows = summarise(results)
        for row in rows:
            for metric in METRICS:
                client.log_metric(parent_id, f"{row['method']}/{metric}_mean", row[f"{metric}_mean"])
                client.log_metric(parent_id, f"{row['method']}/{metric}_std", row[f"{metric}_std"])
        folder = Path(tempfile.mkdtemp(prefix="affectlab-compare-"))
        with (folder / "comparison.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        client.log_artifact(parent_id, str(folder / "comparison.csv"))
        print_table(rows)
    except BaseException:
        client.set_terminated(parent_id, status="FAILED")
        raise
    client.set_terminated(parent_id)
    return rows
