"""The cost of a walk-forward study from its (finished or partial) sweep folder, from the jobs' recorded timings.

    python scripts/study_cost.py outputs/study --jobs 2

Prints the job-seconds per model and fold (mean over the measured jobs: seeds, targets), where a job's time goes
(the parts of metrics.json's `timing`, mean over jobs), and the whole study's projection on the machine that ran it:
every job of the sweep's command (read from its multirun.yaml, or --total-jobs), each not yet measured costed at the
mean of the measured jobs of its model and fold (else its model, else all), queued in sweep order on --jobs parallel
workers (what the joblib launcher does). The seconds are those measured, so they already hold the slowdown of the
parallelism the sweep ran with; project with the same --jobs. It measures and prints; it judges nothing.
"""

from __future__ import annotations

import argparse
import fnmatch
import heapq
import sys
from pathlib import Path

import pandas as pd
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lstm_zoo.evaluation.sweep import read_sweep  # noqa: E402
from lstm_zoo.timing import PARTS  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
KEYS = ["model", "data.target_transform", "backtest.fold"]


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


def measured_jobs(sweep: Path) -> pd.DataFrame:
    """One row per job folder with a recorded `timing`: model, target, fold, status, seconds and its parts."""
    runs = read_sweep(sweep, KEYS)
    rows = []
    for run in runs.to_dict("records"):
        timing = run.get("timing")
        if not isinstance(timing, dict):
            continue
        rows.append({**{k: run.get(k) for k in ["run", *KEYS, "seed", "status", "epochs"]},
                     "seconds": timing["wall"], **{part: timing.get(part, 0.0) for part in PARTS}})
    frame = pd.DataFrame(rows, columns=["run", *KEYS, "seed", "status", "epochs", "seconds", *PARTS])
    frame["backtest.fold"] = pd.to_numeric(frame["backtest.fold"], errors="coerce")
    return frame


def job_cost(job: dict[str, str], measured: pd.DataFrame) -> float:
    """A job's seconds: the mean of the measured jobs of its model and fold, else of its model, else of all."""
    model, fold = job.get("model"), pd.to_numeric(job.get("backtest.fold"), errors="coerce")
    for rows in (measured[(measured["model"] == model) & (measured["backtest.fold"] == fold)],
                 measured[measured["model"] == model], measured):
        if len(rows):
            return float(rows["seconds"].mean())
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
    if total_jobs is None:
        plan = planned_jobs(sweep)
        costs = [job_cost(job, measured) for job in plan]
    else:
        plan = []
        costs = [float(measured["seconds"].mean())] * total_jobs
    numbers = {"measured_jobs": len(measured), "measured_job_seconds": float(measured["seconds"].sum()),
               "planned_jobs": len(costs), "projected_job_seconds": float(sum(costs)), "workers": workers,
               "projected_wall_seconds": makespan(costs, workers)}
    pd.set_option("display.width", 200)
    print(f"# Cost of {sweep}\n\nJob seconds per model and fold (mean over its measured jobs):\n"
          f"{per_fold.round(1).to_string()}\n\nPer model (seconds; epochs: mean epochs trained):\n"
          f"{per_model.round(1).to_string()}\n\nWhere a job's time goes (mean seconds per job):\n"
          f"{parts.round(2).to_string()}\n")
    source = "its multirun.yaml" if plan else "--total-jobs"
    print(f"Measured: {numbers['measured_jobs']} job(s), {numbers['measured_job_seconds'] / 3600:.2f} job-hours.\n"
          f"The whole sweep ({source}): {numbers['planned_jobs']} jobs, {numbers['projected_job_seconds'] / 3600:.2f}"
          f" job-hours; on {workers} parallel worker(s), in sweep order: {numbers['projected_wall_seconds'] / 3600:.2f}"
          " h wall.")
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
