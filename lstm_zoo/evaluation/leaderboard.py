"""Leaderboard of a sweep: one row per model (or per any config keys), test errors as mean ± std over seeds.

`python scripts/compare.py outputs/multirun/<sweep> [--by model data.features]` reads every run folder's
`metrics.json` and `.hydra/config.yaml`, and writes leaderboard.md, leaderboard.csv, leaderboard.png (test RMSE
with error bars against persistence), predictions.png (each group's mean forecast over the actual series) and,
when runs report prediction intervals, their coverage / width / pinball / CRPS table (leaderboard.md's second
table, leaderboard_intervals.csv) into the sweep folder. Failed or incomplete runs are listed, never skipped silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig, ListConfig, OmegaConf  # noqa: E402

from lstm_zoo.evaluation.ensemble import ensemble_predictions, predictions_metrics  # noqa: E402
from lstm_zoo.evaluation.metrics import format_pvalue  # noqa: E402
from lstm_zoo.records import effective_status  # noqa: E402

METRICS = {"rmse": "test/rmse", "mae": "test/mae", "mape": "test/mape"}
COLUMNS = {"num_parameters": "params", "s_per_epoch": "s/epoch", "rmse": "test RMSE", "mae": "test MAE",
           "mape": "test MAPE %", "seeds": "seeds", "persistence_rmse": "persistence RMSE", "skill": "skill",
           "beats_every_seed": "skill > 0 on every seed", "dm_p_max": "DM p (worst seed)",
           "ensemble_rmse": "seed-ensemble RMSE", "ensemble_skill": "ensemble skill", "ensemble_dm_p": "ensemble DM p",
           "failed": "failed"}


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
    row.update({key: config_value(config, choices or {}, key) for key in by if key != "run"}, seed=config.get("seed"))
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
    for column in ["num_parameters", "train_seconds", "epochs", "test/persistence_rmse", *METRICS.values()]:
        runs[column] = pd.to_numeric(runs.get(column), errors="coerce")
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


def leaderboard(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: parameters, seconds per epoch, test metrics' mean and std over seeds, persistence and skill."""
    done = runs[runs["completed"]].assign(
        s_per_epoch=lambda f: f["train_seconds"] / f["epochs"].where(f["epochs"] > 0),
        skill=lambda f: 1 - f["test/rmse"] / f["test/persistence_rmse"],
        **{name: runs[key] for name, key in METRICS.items()},
        persistence_rmse=runs["test/persistence_rmse"],
        dm_p=runs["test/dm_pvalue"] if "test/dm_pvalue" in runs else float("nan"))
    stats = ["rmse", "mae", "mape", "skill"]
    table = done.groupby(by, dropna=False).agg(
        num_parameters=("num_parameters", "median"), s_per_epoch=("s_per_epoch", "mean"),
        seeds=("rmse", "count"), persistence_rmse=("persistence_rmse", "mean"), skill_min=("skill", "min"),
        dm_p_max=("dm_p", "max"),
        **{f"{s}_mean": (s, "mean") for s in stats}, **{f"{s}_std": (s, "std") for s in stats})
    failed = (~runs["completed"]).groupby([runs[k] for k in by], dropna=False).sum().rename("failed")
    table = table.join(seed_ensembles(done, by), how="left").join(failed, how="outer")
    table = table.fillna({"seeds": 0, "failed": 0}).astype({"seeds": int, "failed": int})
    return table.sort_values("rmse_mean", na_position="last")


def seed_ensembles(done: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of two or more runs: the mean forecast over its seeds, scored like a single run."""
    rows = {}
    for key, group in done.groupby(by, dropna=False):
        paths = group["predictions"].dropna()
        if len(paths) > 1:
            metrics = predictions_metrics(ensemble_predictions([pd.read_csv(p) for p in paths]))
            rows[key] = {"ensemble_rmse": metrics["test/rmse"], "ensemble_skill": metrics["test/skill"],
                         "ensemble_dm_p": metrics["test/dm_pvalue"]}
    index = pd.MultiIndex.from_tuples([k if isinstance(k, tuple) else (k,) for k in rows], names=by)
    index = index if len(by) > 1 else index.get_level_values(0)
    return pd.DataFrame(list(rows.values()), index=index,
                        columns=["ensemble_rmse", "ensemble_skill", "ensemble_dm_p"])


def group_label(key: object) -> str:
    """`('gru', 50)` -> 'gru / 50'; a key the run's config lacks (or a broken run) shows as n/a."""
    parts = key if isinstance(key, tuple) else (key,)
    return " / ".join("n/a" if pd.isna(part) else str(part) for part in parts)


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as display strings: `mean ± std` (just the mean for a single seed)."""

    def pm(mean: float, std: float, digits: int = 3) -> str:
        if pd.isna(mean):
            return "n/a"
        return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"

    shown = pd.DataFrame(index=[group_label(k) for k in table.index])
    shown["num_parameters"] = [f"{v:,.0f}" if pd.notna(v) else "n/a" for v in table["num_parameters"]]
    shown["s_per_epoch"] = [f"{v:.2f}" if pd.notna(v) else "n/a" for v in table["s_per_epoch"]]
    for stat in ("rmse", "mae", "mape"):
        shown[stat] = [pm(m, s) for m, s in zip(table[f"{stat}_mean"], table[f"{stat}_std"])]
    shown["seeds"] = table["seeds"].to_numpy()
    shown["persistence_rmse"] = [f"{v:.3f}" if pd.notna(v) else "n/a" for v in table["persistence_rmse"]]
    shown["skill"] = [pm(m, s) for m, s in zip(table["skill_mean"], table["skill_std"])]
    shown["beats_every_seed"] = ["n/a" if pd.isna(v) else "yes" if v > 0 else "no" for v in table["skill_min"]]
    shown["dm_p_max"] = [format_pvalue(v) if pd.notna(v) else "n/a" for v in table["dm_p_max"]]
    for column, digits in (("ensemble_rmse", ".3f"), ("ensemble_skill", ".3f")):
        shown[column] = [f"{v:{digits}}" if pd.notna(v) else "n/a" for v in table[column]]
    shown["ensemble_dm_p"] = [format_pvalue(v) if pd.notna(v) else "n/a" for v in table["ensemble_dm_p"]]
    shown["failed"] = table["failed"].to_numpy()
    return shown.rename(columns=COLUMNS)


def markdown(shown: pd.DataFrame, index_name: str) -> str:
    """A GitHub Markdown table (pandas' to_markdown needs the extra `tabulate` package)."""
    header = [index_name, *shown.columns]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(shown.columns)]
    lines += ["| " + " | ".join(map(str, [label, *row])) + " |" for label, row in zip(shown.index, shown.values)]
    return "\n".join(lines)


def plot_leaderboard(table: pd.DataFrame, path: Path) -> None:
    """Test RMSE per group, mean with ± std error bars, against persistence on the same days."""
    table = table[table["seeds"] > 0]
    labels = [group_label(k) for k in table.index]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.5))
    ax.bar(labels, table["rmse_mean"], yerr=table["rmse_std"].fillna(0), capsize=5, color="tab:blue",
           label="model (mean ± std over seeds)")
    ax.scatter(labels, table["persistence_rmse"], marker="_", s=1500, linewidths=2, color="red", zorder=3,
               label="persistence on the same days (tomorrow = today)")
    ax.set(ylabel="test RMSE (price units)", title="Test RMSE by " + ", ".join(table.index.names))
    ax.set_ylim(top=1.3 * float((table["rmse_mean"] + table["rmse_std"].fillna(0)).max()))
    ax.tick_params(axis="x", rotation=30)
    ax.legend(loc="upper right", markerscale=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_predictions(runs: pd.DataFrame, by: list[str], path: Path) -> bool:
    """Each group's test forecast (mean over its seeds) over the actual series; False if no run has predictions."""
    with_predictions = runs[runs["completed"] & runs["predictions"].notna()] if "predictions" in runs else runs[:0]
    if with_predictions.empty:
        return False
    fig, ax = plt.subplots(figsize=(11, 4.5))
    actual_drawn = False
    for key, group in with_predictions.groupby(by, dropna=False):
        frame = pd.concat(pd.read_csv(p, parse_dates=["date"]) for p in group["predictions"])
        mean = frame.groupby("date")[["actual", "predicted"]].mean()
        if not actual_drawn:
            ax.plot(mean.index, mean["actual"], color="black", linewidth=2, label="actual")
            actual_drawn = True
        ax.plot(mean.index, mean["predicted"], linewidth=1, label=f"{group_label(key)} (n={len(group)})")
    ax.set(title="Test-period forecasts, one step ahead (mean over seeds)", xlabel="date", ylabel="price")
    ax.legend(fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def interval_leaderboard(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group, means over seeds: the prediction intervals' empirical coverage and mean width for each level, the
    pinball loss and CRPS, the model's beside persistence's (split-conformal at the same levels); empty if no run
    reports intervals."""
    done = runs[runs["completed"]]
    levels = sorted({c.removeprefix("test/coverage_") for c in done.dropna(axis=1, how="all").columns
                     if c.startswith("test/coverage_")}, key=float)
    if not levels:
        return pd.DataFrame()
    who = ("", "persistence_")
    keys = [f"{w}{kind}_{level}" for level in levels for kind in ("coverage", "width") for w in who]
    keys += [f"{w}{score}" for score in ("pinball", "crps") for w in who]
    values = done[by].join(done.reindex(columns=[f"test/{k}" for k in keys]).apply(pd.to_numeric, errors="coerce"))
    table = values.groupby(by, dropna=False).mean().rename(columns=lambda c: c.removeprefix("test/"))
    methods = done.reindex(columns=[*by, "intervals"]).groupby(by, dropna=False)["intervals"]
    table.insert(0, "intervals", methods.agg(lambda s: "; ".join(sorted(set(s.dropna().astype(str)))) or "n/a"))
    return table


def formatted_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """The interval leaderboard as display strings: `cover 80%`, `persistence width 80%`, `CRPS`, ..."""
    def label(key: str) -> str:
        who, key = ("persistence ", key.removeprefix("persistence_")) if key.startswith("persistence_") else ("", key)
        kind, _, level = key.partition("_")
        return who + {"coverage": f"cover {level}%", "width": f"width {level}%", "crps": "CRPS"}.get(kind, kind)

    shown = pd.DataFrame(index=[group_label(k) for k in table.index])
    shown["intervals"] = table["intervals"].to_numpy()
    for column in table.columns.drop("intervals"):
        shown[label(column)] = [f"{v:.3f}" if pd.notna(v) else "n/a" for v in table[column]]
    return shown


def compare(sweep: Path, by: list[str], allow_mixed_code: bool = False) -> pd.DataFrame:
    """Build, print and write the leaderboard of `sweep`; returns the numeric table."""
    runs = read_sweep(sweep, by, allow_mixed_code)
    table = leaderboard(runs, by)
    shown = formatted(table)
    failed = runs.loc[~runs["completed"], ["run", "status"]]
    counts = failed["status"].str.split(":").str[0].value_counts()
    others = ", ".join(f"{n} {s}" for s, n in counts.items())
    notes = [f"{len(runs)} runs in {sweep}: {int(runs['completed'].sum())} completed{', ' + others if others else ''}. "
             "Test metrics are in price units; skill = 1 - RMSE / persistence RMSE."]
    if code_versions(runs):
        notes.append(f"Runs of different code pooled (--allow-mixed-code): {code_versions(runs)}.")
    if len(failed):
        notes += ["", "Runs that do not count (failed, interrupted, running or incomplete):"]
        notes += [f"- {r.run}: {r.status}" for r in failed.itertuples()]
    text = markdown(shown, " / ".join(by)) + "\n\n" + "\n".join(notes) + "\n"
    intervals = interval_leaderboard(runs, by)
    written = ["leaderboard.md", "leaderboard.csv", "runs.csv"]
    if not intervals.empty:
        intervals = intervals.reindex([k for k in table.index if k in intervals.index])  # the main table's order
        text += ("\nPrediction intervals on the test period (means over seeds; coverage = share of actual prices "
                 "inside the interval, width in price units; persistence: split-conformal at the same levels):\n\n"
                 + markdown(formatted_intervals(intervals), " / ".join(by)) + "\n")
        intervals.to_csv(sweep / "leaderboard_intervals.csv")
        written.append("leaderboard_intervals.csv")
    (sweep / "leaderboard.md").write_text(text)
    table.to_csv(sweep / "leaderboard.csv")
    runs.drop(columns=["predictions"], errors="ignore").to_csv(sweep / "runs.csv", index=False)
    if (table["seeds"] > 0).any():
        plot_leaderboard(table, sweep / "leaderboard.png")
        written.append("leaderboard.png")
    if plot_predictions(runs, by, sweep / "predictions.png"):
        written.append("predictions.png")
    print(text + f"\nWrote {', '.join(written)} to {sweep}")
    return table

