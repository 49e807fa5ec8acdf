"""The `scripts/compare.py` command line: which leaderboard a folder of runs gets.

Walk-forward and multi-ticker sweeps (runs with `backtest.fold` or `data.tickers`) get the pooled report of
`lstm_zoo.evaluation.backtest`. A sweep of single-split, single-ticker runs gets the plain leaderboard of
`lstm_zoo.evaluation.leaderboard`, and so does a folder of single runs such as outputs/runs (each `python train.py
...` run its own row: `--by run`, the default there), since runs made one by one differ in whatever their commands
changed and are not pooled.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from lstm_zoo.evaluation.backtest import compare_backtest
from lstm_zoo.evaluation.confidence import Bootstrap
from lstm_zoo.evaluation.leaderboard import compare
from lstm_zoo.evaluation.sweep import read_sweep, sweep_keys


def is_backtest(runs: pd.DataFrame) -> bool:
    """Runs with walk-forward folds or with data.tickers (global or per-ticker models) get the pooled report."""
    return bool(runs["backtest.fold"].notna().any() or runs["data.tickers"].notna().any())


def single_runs(sweep: Path, runs: pd.DataFrame) -> bool:
    """Every run folder of `sweep` holds a single `python train.py` run (Hydra mode RUN), none a sweep's job."""
    modes = {OmegaConf.select(OmegaConf.load(sweep / run / ".hydra" / "hydra.yaml"), "hydra.mode")
             for run in runs["run"] if (sweep / run / ".hydra" / "hydra.yaml").is_file()}
    return modes == {"RUN"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Leaderboard of a sweep (walk-forward and multi-ticker sweeps: "
                                     "pooled, per-fold and per-ticker tables, MCS and SPA).")
    parser.add_argument("sweep", type=Path, help="a sweep folder, e.g. outputs/multirun/<date>_walk_forward")
    parser.add_argument("--by", nargs="+",
                        help="config groups or keys that define a configuration, e.g. --by model "
                             "data.target_transform, or `run` (one row per run folder). Default: model for a sweep, "
                             "run for a folder of single runs such as outputs/runs")
    parser.add_argument("--block-size", type=int, default=Bootstrap.block_size,
                        help="mean block length (days) of the stationary bootstrap of MCS and SPA (default 20)")
    parser.add_argument("--reps", type=int, default=Bootstrap.reps, help="bootstrap replications (default 1000)")
    parser.add_argument("--bootstrap-seed", type=int, default=Bootstrap.seed, help="seed of the bootstrap (default 0)")
    parser.add_argument("--mcs-sizes", type=float, nargs="+", default=[0.10, 0.25],
                        help="MCS levels (default 0.10 0.25: the 90%% and 75%% confidence sets)")
    parser.add_argument("--allow-mixed-code", action="store_true",
                        help="pool runs that ran different code (another commit, other uncommitted changes, another "
                             "torch or lightning); refused by default")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        parser.error(f"{args.sweep}: no such folder. Fix: pass a sweep folder under outputs/multirun/")
    if args.block_size < 1 or args.reps < 1 or not all(0 < s < 1 for s in args.mcs_sizes):
        parser.error("--block-size and --reps must be >= 1 and every --mcs-sizes value in (0, 1)")
    if args.by is None:
        args.by = ["run"] if single_runs(args.sweep, read_sweep(args.sweep, ["model"], True)) else ["model"]
    if "run" in args.by:  # each run on its own: its metrics as published, nothing pooled
        compare(args.sweep, args.by, args.allow_mixed_code)
    elif is_backtest(read_sweep(args.sweep, sweep_keys(args.by), args.allow_mixed_code)):
        compare_backtest(args.sweep, args.by, Bootstrap(args.block_size, args.reps, args.bootstrap_seed),
                         tuple(args.mcs_sizes), args.allow_mixed_code)
    else:
        compare(args.sweep, args.by, args.allow_mixed_code)
