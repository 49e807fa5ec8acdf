"""A sweep folder read into one row per run folder: its group keys, seed, status, metrics and predictions.csv (a
failed or broken run stays a row whose status says why), and each configuration's pooled forecasts. Both
leaderboards (`lstm_zoo.evaluation.leaderboard`, `lstm_zoo.evaluation.backtest`) start here."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf

from lstm_zoo.evaluation.metrics import METRICS
from lstm_zoo.evaluation.pooling import pool_folds
from lstm_zoo.records import effective_status


def config_value(config: DictConfig, choices: dict, key: str) -> object:
    """A config group's choice (`model` -> `gru`) or a config value (`model.hidden_size` -> 50), hashable."""
    if key in choices:
        return choices[key]
    value = OmegaConf.select(config, key, throw_on_resolution_failure=False)
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value)
    return ",".join(map(str, value)) if isinstance(value, list) else value if value is None else str(value)


def run_folders(sweep: Path) -> list[Path]:
    """Every folder with a `.hydra` config below `sweep`, plus every other visible subfolder (a broken run)."""
    found = {p.parent for p in sweep.rglob(".hydra") if p.is_dir()}
    holders = {parent for run in found for parent in run.parents}  # e.g. sweeps inside outputs/multirun
    found |= {p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".") and p not in holders}
    return sorted(found - {sweep}, key=lambda p: (len(p.parts), p.name.split("_")[0].zfill(6), p.name))


def read_run(run: Path, sweep: Path, by: list[str]) -> dict:
    """One run's group keys, seed, status and metrics; the status says why a run does not count."""
    row: dict = {**dict.fromkeys(by), "run": str(run.relative_to(sweep))}  # --by run: one row per run folder
    config_file, metrics_file = run / ".hydra" / "config.yaml", run / "metrics.json"
    if not config_file.is_file():
        return {**row, "status": "failed: no .hydra/config.yaml (not a train.py run folder)"}
    config = OmegaConf.load(config_file)
    hydra_file = run / ".hydra" / "hydra.yaml"
    choices = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices") if hydra_file.is_file() else {}
    row.update({key: config_value(config, choices or {}, key) for key in by if key != "run"}, seed=config.get("seed"),
               model_target=OmegaConf.select(config, "model._target_", default=None))
    if not metrics_file.is_file():
        return {**row, "status": "failed: no metrics.json (the job crashed or never started)"}
    metrics = json.loads(metrics_file.read_text())
    status, why = effective_status(metrics)  # a `running` record whose process is gone (SIGKILL) is interrupted
    if status == "completed" and metrics.get("test/rmse") is None:
        status = "incomplete: no test metrics (test=false?)"
    elif status != "completed":
        status = f"{status}: {why or 'no error recorded'}"
    metrics.pop("process", None)  # who ran it (pid, host, heartbeat): not a column
    metrics["code"] = (metrics.get("code") or {}).get("id")  # see lstm_zoo.records.code_version
    predictions = run / "predictions.csv"
    # metrics first: a group key such as `model` (the config choice) wins over metrics' `model` (the class name)
    return {**metrics, **row, "status": status, "predictions": str(predictions) if predictions.is_file() else None}


def read_sweep(sweep: Path, by: list[str], allow_mixed_code: bool = False) -> pd.DataFrame:
    """One row per run folder of `sweep`; refuses completed runs of different code unless `allow_mixed_code`."""
    runs = pd.DataFrame([read_run(run, sweep, by) for run in run_folders(sweep)])
    if runs.empty:
        raise SystemExit(f"{sweep}: no run folders found. Fix: pass a sweep folder, e.g. outputs/multirun/<date>")
    numeric = ["num_parameters", "train_seconds", "epochs", "val/rmse", "val/persistence_rmse",
               *(f"test/{m.name}" for m in METRICS), *(f"test/persistence_{m.name}" for m in METRICS if m.persistence)]
    for column in numeric:
        runs[column] = pd.to_numeric(runs[column], errors="coerce") if column in runs else float("nan")
    runs["completed"] = runs["status"] == "completed"
    versions = code_versions(runs)
    if len(versions) > 1 and not allow_mixed_code:
        raise SystemExit(f"{sweep}: its completed runs ran different code, so their results cannot be pooled: "
                         f"{versions}. Fix: re-run them with one version of the code, or --allow-mixed-code to pool "
                         "them anyway.")
    return runs


def code_versions(runs: pd.DataFrame) -> str:
    """The code versions of the completed runs, each with its runs ('' for one version): lstm_zoo's commit and a hash
    of the checkout's uncommitted differences (or its version outside git), torch and lightning."""
    done = runs[runs["completed"]]
    codes = done.get("code", pd.Series(None, index=done.index, dtype=object)).fillna("not recorded")
    if codes.nunique() < 2:
        return ""

    def runs_of(names: pd.Series) -> str:
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    return "; ".join(f"{code} ({runs_of(done['run'][codes == code])})" for code in sorted(codes.unique()))


def sweep_keys(by: list[str]) -> list[str]:
    """The --by keys plus the fold and tickers of each run."""
    return list(dict.fromkeys([*by, "backtest.fold", "data.tickers"]))


def group_label(key: object) -> str:
    """`('gru', 50)` -> 'gru / 50'; a key the run's config lacks (or a broken run) shows as n/a."""
    parts = key if isinstance(key, tuple) else (key,)
    return " / ".join("n/a" if pd.isna(part) else str(part) for part in parts)


def read_forecasts(runs: pd.DataFrame, by: list[str]) -> dict[str, dict[int, pd.DataFrame]]:
    """Per configuration label and seed, the pooled forecasts of its completed runs (a `fold` column added)."""
    done = runs[runs["completed"] & runs["predictions"].notna()]
    forecasts: dict[str, dict[int, pd.DataFrame]] = {}
    for key, group in done.groupby(by, dropna=False, sort=True):
        per_seed = {}
        for seed, members in group.groupby("seed", sort=True):
            frames = [pd.read_csv(path, parse_dates=["date"]).assign(fold=int(fold) if pd.notna(fold) else 0)
                      for path, fold in zip(members["predictions"], members["backtest.fold"])]
            try:
                per_seed[int(seed)] = pool_folds(frames)
            except ValueError as err:  # two runs of one configuration and seed forecast the same ticker-days
                raise SystemExit(f"configuration {group_label(key)!r}, seed {seed}: {err} Or put the setting that "
                                 "tells those runs apart in --by, or list each run on its own with --by run.") from None
        forecasts[group_label(key)] = per_seed
    return forecasts
