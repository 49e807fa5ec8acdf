"""The cost of a walk-forward study from its (finished or partial) sweep folder, from the jobs' recorded timings.

    python scripts/study_cost.py outputs/study --jobs 2

Prints the job-seconds per model and fold (mean over the measured jobs: seeds, targets), where a job's time goes
(the parts of metrics.json's `timing`, mean over jobs), and the whole study's projection on the machine that ran it:
every job of the sweep's command (read from its multirun.yaml, or --total-jobs), each not yet measured costed at the
mean of the measured jobs of its model and fold (else its model, else all), queued in sweep order on --jobs parallel
workers (what the joblib launcher does). The seconds are those measured, so they already hold the slowdown of the
parallelism the sweep ran with; project with the same --jobs.

Before and after, on the measured jobs: "after" as measured (the sweep's `backtest.refit_every`, early stopping);
estimated, with each job's settings from its .hydra/config.yaml: "before", the old protocol (every fold refit,
`trainer.max_epochs` epochs, no early stopping), and "early_only" (every fold refit, the measured epochs). A job's fit
(its epochs' training + validation seconds; a model fit in one pass: its `train` part) scales with the training
windows of its own fold (`backtest.refit_every=1`, counted by the project's data module) against those it fit on;
its other parts stay as measured (a reused fold's checkpoint load stands in for a fit's data set-up and overhead):
- rate = seconds per epoch and training window: a trained job's mean epoch / its windows; for a fold that reused its
  refit fold's model, rate and epoch count interpolated linearly in the fold index between the trained folds of its
  configuration (model, target, seed; else of its model), the nearest trained fold's beyond them;
- before = other parts + max_epochs x rate x own windows; early_only = other parts + epochs x rate x own windows;
- a model fit in one pass (drift, mean, linear, arima, ets) is only refit on its own fold: fit x own / fitted windows.
It measures and prints; it judges nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import heapq
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lstm_zoo.errors import DataError  # noqa: E402
from lstm_zoo.evaluation.sweep import read_sweep  # noqa: E402
from lstm_zoo.timing import PARTS  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
KEYS = ["model", "data.target_transform", "backtest.fold"]
CONFIG = {"max_epochs": "trainer.max_epochs", "patience": "callbacks.early_stopping.patience",
          "refit_every": "backtest.refit_every"}


def planned_jobs(sweep: Path) -> list[dict[str, str]]:
    """Every job of the command that made `sweep` (its multirun.yaml), in launch order, as {key: value}."""
    path = sweep / "multirun.yaml"
    if not path.is_file():
        raise SystemExit(f"{sweep}: no multirun.yaml (not a sweep folder of train.py -m). Fix: pass --total-jobs.")
    config = OmegaConf.load(path)
    params = {str(k): str(v) for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()}
    for override in OmegaConf.select(config, "hydra.overrides.task") or []:  # the command line wins
        key, _, value = str(override).partition("=")
        if not key.startswith(("hydra.", "hydra/", "~", "+")):
            params[key] = value
    for key, value in params.items():  # glob(...) over a config group: its options, as Hydra expands them
        if value.startswith("glob(") and (CONF / key).is_dir():
            patterns = [p.strip(" '\"") for p in value[5:-1].split(",") if p.strip()]
            names = sorted(p.stem for p in (CONF / key).glob("*.yaml"))
            params[key] = ",".join(n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns))
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [dict(o.split("=", 1) for o in job) for job in BasicSweeper.split_arguments(parsed, None)[0]]


def fold_windows(config: DictConfig, cache: dict[str, int]) -> float:
    """Training windows of the job's own fold (`backtest.refit_every=1`, the old protocol), as the data module counts
    them; NaN for a job that is no walk-forward fold."""
    if OmegaConf.select(config, "backtest._target_") is None or OmegaConf.select(config, "data._target_") is None:
        return float("nan")
    backtest = OmegaConf.merge(config.backtest, {"refit_every": 1})
    key = OmegaConf.to_yaml({"data": config.data, "backtest": backtest})
    if key not in cache:
        datamodule = instantiate(config.data, backtest=backtest)
        datamodule.setup("fit")
        cache[key] = len(datamodule.datasets["train"])
    return cache[key]


def measured_jobs(sweep: Path) -> pd.DataFrame:
    """One row per job folder with a recorded `timing`: model, target, fold, status, seconds and its parts, and
    what the estimates need: kind (trained, reused, fitted), fit seconds, windows fit on and of its own fold."""
    runs = read_sweep(sweep, KEYS, allow_mixed_code=True)  # costs pool across code versions
    rows, cache = [], {}
    for run in runs.to_dict("records"):
        timing = run.get("timing")
        if not isinstance(timing, dict):
            continue
        config = OmegaConf.load(sweep / run["run"] / ".hydra" / "config.yaml")
        epochs = [e["train"] + e["validation"] for e in timing.get("epochs") or []]
        kind = "trained" if epochs else "fitted" if run.get("tested_weights") == "fitted" else "reused"
        try:
            own = fold_windows(config, cache)
        except DataError as err:
            raise SystemExit(f"{sweep / run['run']}: cannot count its fold's training windows: {err}") from None
        windows = (run.get("windows") or {}).get("train", float("nan"))
        fit = sum(epochs) if epochs else timing.get("train", 0.0) if kind == "fitted" else 0.0
        rows.append({**{k: run.get(k) for k in ["run", *KEYS, "seed", "status", "epochs"]},
                     "seconds": timing["wall"], **{part: timing.get(part, 0.0) for part in PARTS}, "kind": kind,
                     "fit": fit, "rate": fit / len(epochs) / windows if epochs else float("nan"),
                     "fitted_windows": windows, "own_windows": own,
                     **{k: OmegaConf.select(config, v) for k, v in CONFIG.items()}})
    frame = pd.DataFrame(rows, columns=["run", *KEYS, "seed", "status", "epochs", "seconds", *PARTS, "kind", "fit",
                                        "rate", "fitted_windows", "own_windows", *CONFIG])
    for column in ["backtest.fold", "epochs", "rate", "fitted_windows", "own_windows", "max_epochs"]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def before_after(jobs: pd.DataFrame) -> pd.DataFrame:
    """`jobs` with `before` (the old protocol) and `early_only` (every fold refit, the measured epochs) seconds."""
    jobs = jobs.copy()
    trained = jobs[jobs["kind"] == "trained"]
    for key, group in jobs[jobs["kind"] != "fitted"].groupby(["model", "data.target_transform", "seed"],
                                                              dropna=False):
        source = trained[trained.index.isin(group.index)]
        source = source if len(source) else trained[trained["model"] == key[0]]
        points = source.groupby("backtest.fold")[["rate", "epochs"]].mean()
        for column in ["rate", "epochs"]:
            jobs.loc[group.index, f"{column}_at"] = (np.interp(group["backtest.fold"], points.index, points[column])
                                                     if len(points) else float("nan"))
    other, fitted = jobs["seconds"] - jobs["fit"], jobs["kind"] == "fitted"
    refit = other + jobs["fit"] * jobs["own_windows"] / jobs["fitted_windows"]  # a model fit in one pass, refit
    epoch_seconds = jobs["rate_at"] * jobs["own_windows"]
    jobs["before"] = refit.where(fitted, other + jobs["max_epochs"] * epoch_seconds)
    jobs["early_only"] = refit.where(fitted, other + jobs["epochs_at"] * epoch_seconds)
    return jobs


def hours(rows: pd.DataFrame) -> pd.Series:
    """Job-hours of `rows` as measured (after), with early stopping only, and under the old protocol (before)."""
    after, early_only, before = (rows[c].sum() / 3600 for c in ["seconds", "early_only", "before"])
    return pd.Series({"jobs": len(rows), "after_h": after, "early_only_h": early_only, "before_h": before,
                      "after/before": after / before if before else np.nan,
                      "early_only/before": early_only / before if before else np.nan})


def job_cost(job: dict[str, str], measured: pd.DataFrame, column: str = "seconds") -> float:
    """A job's `column` seconds: the mean of the measured jobs of its model and fold, else of its model, else of all."""
    model, fold = job.get("model"), pd.to_numeric(job.get("backtest.fold"), errors="coerce")
    for rows in (measured[(measured["model"] == model) & (measured["backtest.fold"] == fold)],
                 measured[measured["model"] == model], measured):
        if len(rows):
            return float(rows[column].mean())
    raise SystemExit("no job of the sweep has recorded its timing yet: nothing to project from.")


def makespan(costs: list[float], workers: int) -> float:
    """Wall seconds of `costs` run in order on `workers` parallel workers, each job going to the first free one."""
    free = [0.0] * workers
    for cost in costs:
        heapq.heappush(free, heapq.heappop(free) + cost)
    return max(free)


def report(sweep: Path, workers: int, total_jobs: int | None = None) -> dict:
    """Print the tables and the projection; returns the numbers printed."""
    measured = measured_jobs(sweep)
    if measured.empty:
        raise SystemExit(f"{sweep}: no job folder with a recorded timing (metrics.json `timing`) yet.")
    per_fold = measured.pivot_table(index="model", columns="backtest.fold", values="seconds", aggfunc="mean")
    per_fold.columns = [f"fold {int(c)}" for c in per_fold.columns]
    per_model = measured.groupby("model").agg(jobs=("seconds", "size"), mean_s=("seconds", "mean"),
                                              total_s=("seconds", "sum"), epochs=("epochs", "mean"))
    parts = measured.groupby("model")[list(PARTS)].mean()
    jobs = before_after(measured)
    known = jobs.dropna(subset=["before", "early_only"])
    kinds = known["kind"].map({"fitted": "all fitted in one pass"}).fillna("all trained by epochs")
    table = pd.DataFrame({**{m: hours(rows) for m, rows in known.groupby("model")},
                          **{k: hours(rows) for k, rows in known.groupby(kinds)}, "all": hours(known)}).T
    plan = planned_jobs(sweep) if total_jobs is None else [{}] * total_jobs  # {}: costed at the mean of all
    costs = [job_cost(job, measured) for job in plan]
    before = [job_cost(job, known, "before") for job in plan] if len(known) else [float("nan")]
    numbers = {"measured_jobs": len(measured), "measured_job_seconds": float(measured["seconds"].sum()),
               "planned_jobs": len(costs), "projected_job_seconds": float(sum(costs)), "workers": workers,
               "projected_wall_seconds": makespan(costs, workers), "estimated_jobs": len(known),
               **{f"{k}_job_seconds": float(known[c].sum()) for k, c in
                  [("after", "seconds"), ("early_only", "early_only"), ("before", "before")]},
               "projected_before_job_seconds": sum(before), "projected_before_wall_seconds": makespan(before, workers)}
    pd.set_option("display.width", 200)
    print(f"# Cost of {sweep}\n\nJob seconds per model and fold (mean over its measured jobs):\n"
          f"{per_fold.round(1).to_string()}\n\nPer model (seconds; epochs: mean epochs trained):\n"
          f"{per_model.round(1).to_string()}\n\nWhere a job's time goes (mean seconds per job):\n"
          f"{parts.round(2).to_string()}\n")
    source = "its multirun.yaml" if total_jobs is None else "--total-jobs"
    print(f"Measured: {numbers['measured_jobs']} job(s), {numbers['measured_job_seconds'] / 3600:.2f} job-hours.\n"
          f"The whole sweep ({source}): {numbers['planned_jobs']} jobs, {numbers['projected_job_seconds'] / 3600:.2f}"
          f" job-hours; on {workers} parallel worker(s), in sweep order: {numbers['projected_wall_seconds'] / 3600:.2f}"
          " h wall.")
    gradient = jobs[jobs["kind"] != "fitted"]
    setting = {k: "/".join(map(str, gradient[k].dropna().unique())) or "n/a" for k in CONFIG}
    print(f"\nBefore and after, job-hours of the measured jobs ({len(known)} of {len(jobs)} could be estimated):\n"
          f"  after: as measured: refit every {setting['refit_every']} folds, early stopping (patience "
          f"{setting['patience']}), at most {setting['max_epochs']} epochs;\n  early_only: estimated, every fold "
          "refit, the measured epochs (interpolated for a fold that reused its refit fold's model);\n  before: "
          f"estimated, the old protocol: every fold refit, {setting['max_epochs']} epochs, no early stopping.\n"
          "  Estimated epoch seconds = seconds per epoch and training window (the trained folds', interpolated in the "
          "fold index)\n  x the fold's own training windows; a model fit in one pass is refit on its own fold's "
          f"windows.\n{table.astype({'jobs': int}).round(3).to_string()}\nThe whole sweep before: "
          f"{numbers['projected_before_job_seconds'] / 3600:.2f} job-hours; on {workers} parallel worker(s), in "
          f"sweep order: {numbers['projected_before_wall_seconds'] / 3600:.2f} h wall.")
    return numbers


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="Job-seconds per model and fold of a walk-forward sweep, and the "
                                     "projected wall time of the whole sweep on n parallel workers.")
    parser.add_argument("sweep", type=Path, help="the sweep folder, e.g. outputs/study")
    parser.add_argument("--jobs", type=int, default=2, help="parallel workers of the projection (default 2)")
    parser.add_argument("--total-jobs", type=int, default=None,
                        help="the number of jobs of the whole study (default: from the sweep's multirun.yaml)")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        parser.error(f"{args.sweep}: no such folder. Fix: pass the study's sweep folder, e.g. outputs/study")
    if args.jobs < 1 or (args.total_jobs is not None and args.total_jobs < 1):
        parser.error("--jobs and --total-jobs must be >= 1")
    return report(args.sweep, args.jobs, args.total_jobs)


if __name__ == "__main__":
    main()
