"""Seed ensembles of a sweep: `python scripts/ensemble.py outputs/multirun/<sweep> [--by model data.target_transform]`.

Every folder under the given paths that holds a predictions.csv is a run. Runs are grouped by their command-line
overrides minus `seed` (or by the config keys given with --by); each group's test predictions are averaged and
scored like a single run. Groups are listed best validation RMSE first: choose on validation, never on test.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from lstm_zoo.evaluation.ensemble import ensemble_predictions, predictions_metrics
from lstm_zoo.evaluation.metrics import format_pvalue


def find_runs(paths: list[Path]) -> list[Path]:
    runs = sorted({p.parent for path in paths for p in ([path] if path.is_file() else path.rglob("predictions.csv"))})
    if not runs:
        raise SystemExit(f"no predictions.csv under {[str(p) for p in paths]}: pass run or sweep folders of "
                         "finished runs (test=true).")
    return runs


def settings(run: Path, by: list[str] | None) -> dict[str, str]:
    """What defines the run's configuration: its command-line overrides but `seed`, or the --by keys' values."""
    hydra_dir = run / ".hydra"
    if by:  # a config group's option name (model=gru) where the key is a group, else the config value
        choices = OmegaConf.load(hydra_dir / "hydra.yaml").hydra.runtime.choices
        cfg = OmegaConf.load(hydra_dir / "config.yaml")
        return {key: str(choices[key] if key in choices else OmegaConf.select(cfg, key)) for key in by}
    overrides = OmegaConf.load(hydra_dir / "overrides.yaml") if hydra_dir.is_dir() else []
    pairs = (o.split("=", 1) for o in overrides if "=" in o)
    return {k: v for k, v in pairs if k not in ("seed", "output_dir") and not k.startswith("hydra.")}


def group_labels(runs: list[Path], by: list[str] | None) -> list[str]:
    """One label per run, naming only the settings that differ between runs (all runs alike: 'all')."""
    per_run = [settings(run, by) for run in runs]
    keys = sorted({k for s in per_run for k in s})
    varying = [k for k in keys if by or len({s.get(k) for s in per_run}) > 1]
    return [" ".join(f"{k}={s.get(k, '(default)')}" for k in varying) or "all" for s in per_run]


def fmt(value: float | None, spec: str = ".3f") -> str:
    return format(value, spec) if value is not None and math.isfinite(value) else "n/a"


def summarize(runs: list[Path], by: list[str] | None = None) -> pd.DataFrame:
    """One row per configuration: validation RMSE, per-seed test skill and DM p-values, and the ensemble's."""
    groups: dict[str, list[Path]] = {}
    for run, label in zip(runs, group_labels(runs, by)):
        groups.setdefault(label, []).append(run)
    rows = []
    for key, members in groups.items():
        singles = [json.loads((run / "metrics.json").read_text()) for run in members]
        skills = [m.get("test/skill") for m in singles]
        val_rmse = [m["val/rmse"] for m in singles if m.get("val/rmse") is not None]
        val_skill = [1 - m["val/rmse"] / m["val/persistence_rmse"] for m in singles
                     if m.get("val/rmse") is not None and m.get("val/persistence_rmse")]
        ensemble = predictions_metrics(ensemble_predictions([pd.read_csv(run / "predictions.csv") for run in members]))
        rows.append({
            "config": key, "runs": len(members),
            "val_rmse_mean": statistics.fmean(val_rmse) if val_rmse else math.nan,
            "val_skill_mean": statistics.fmean(val_skill) if val_skill else math.nan,
            "skill_per_seed": " ".join(fmt(s, "+.4f") for s in skills),
            "dm_p_per_seed": " ".join(format_pvalue(m.get("test/dm_pvalue")) for m in singles),
            "beats_on_every_seed": all(s is not None and s > 0 for s in skills),
            "ensemble_rmse": ensemble["test/rmse"], "persistence_rmse": ensemble["test/persistence_rmse"],
            "ensemble_skill": ensemble["test/skill"], "ensemble_directional_accuracy":
                ensemble["test/directional_accuracy"], "ensemble_dm_stat": ensemble["test/dm_stat"],
            "ensemble_dm_pvalue": ensemble["test/dm_pvalue"],
        })
    return pd.DataFrame(rows).sort_values("val_rmse_mean", kind="stable").reset_index(drop=True)


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown (numbers to 4 decimals), to paste into notes."""
    def cell(column: str, value: object) -> str:
        if column == "ensemble_dm_pvalue":
            return format_pvalue(value)
        return fmt(value, ".4f") if isinstance(value, float) else str(value)

    cells = [[cell(c, v) for c, v in zip(table.columns, row)] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, sweep folders or predictions.csv files")
    parser.add_argument("--by", nargs="+", help="group by these config keys (e.g. model data.target_transform)")
    parser.add_argument("--out", type=Path, help="also write the table as CSV here")
    args = parser.parse_args()
    table = summarize(find_runs(args.paths), args.by)
    if args.out:
        table.to_csv(args.out, index=False)
    print(markdown(table))


if __name__ == "__main__":
    main()
