"""`python experiments/raer.py compare [key=value ...]`: the paper's comparison table in one command.

Every method of ``compare.methods`` (a name and the ``key=value`` overrides that make it from the config) is trained
and tested once per seed of ``compare.seeds``. MLflow gets one parent run holding the table (mean ± std of test UAR
and WAR per method) and one nested child run per method and seed, so ``mlflow ui`` compares them side by side.
"""

from __future__ import annotations

import csv
import os
import statistics

from omegaconf import DictConfig, OmegaConf

from affectlab.lab.config import ConfigError, with_overrides
from affectlab.lab.raer.train import train
from affectlab.lab.report import print_table
from affectlab.lab.sweep import Sweep

METRICS = ("test/uar", "test/war")


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
    problems = []
    for method in chosen:  # every method's overrides checked before the first one trains
        try:
            with_overrides(cfg, list(methods[method]), "raer", f"the overrides of compare.methods.{method}")
        except ConfigError as error:
            problems.append(str(error))
    if problems:
        raise ConfigError("\n".join(problems))

    named = cfg.copy()
    named.mlflow.run_name = cfg.mlflow.run_name or "comparison"
    sweep = Sweep.open(named)
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for method in chosen:
            for seed in seeds:
                name = f"{method} · seed {seed}"
                done = sweep.result(name)
                if done is None:
                    child = sweep.child_config(name, list(methods[method]), "raer", seed=seed,
                                               tags={"method": method, "seed": str(seed)})
                    done = {"metrics": train(child)}
                    sweep.save_result(name, done)
                results.setdefault(method, []).append(done["metrics"])
        rows = summarise(results)
        table = sweep.folder / "comparison.csv"
        with table.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        summary = {f"{row['method']}/{metric}_{part}": row[f"{metric}_{part}"]
                   for row in rows for metric in METRICS for part in ("mean", "std")}
        sweep.finish(summary, [table])
        print_table({"method": [r["method"] for r in rows], "seeds": [r["seeds"] for r in rows],
                     **{f"{m.split('/')[1].upper()} (%)": [f"{100 * r[f'{m}_mean']:.2f} ± {100 * r[f'{m}_std']:.2f}"
                                                          for r in rows] for m in METRICS}},
                    title="RAER test, mean ± std over seeds")
    except BaseException:
        sweep.finish({}, status="FAILED")
        raise
    return rows
