"""Leaderboard of a sweep: one row per model (or per any config keys), test errors as mean ± std over seeds.

`python scripts/compare.py outputs/multirun/<sweep> [--by model data.features]` reads every run folder's
`metrics.json` and `.hydra/config.yaml`, and writes leaderboard.md, leaderboard.csv, leaderboard.png (test RMSE
with error bars against persistence), predictions.png (each group's mean forecast over the actual series) and,
when runs report prediction intervals, their coverage / width / pinball / CRPS table (leaderboard_intervals.csv)
into the sweep folder. Groups of several seeds also get their seed ensemble (the mean forecast over the seeds, scored
like one run) beside each seed's skill and DM p, ranked by validation RMSE (leaderboard_ensembles.csv). The columns
are `lstm_zoo.evaluation.metrics.METRICS`. Failed or incomplete runs are listed, never skipped silently.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lstm_zoo.evaluation.ensemble import ENSEMBLE, seed_ensembles  # noqa: E402
from lstm_zoo.evaluation.metrics import METRICS  # noqa: E402
from lstm_zoo.evaluation.sweep import code_versions, group_label, read_sweep  # noqa: E402

MEAN = [m for m in METRICS if m.over_seeds == "mean"]  # mean ± std over seeds
WORST = [m for m in METRICS if m.over_seeds == "max"]  # the worst seed's


def leaderboard(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: parameters, seconds per epoch, each metric's mean and std over seeds (the worst seed's p-value),
    persistence's RMSE, the lowest skill over seeds, and the seed ensemble's metrics (ensemble_<name>)."""
    done = runs[runs["completed"]].assign(s_per_epoch=lambda f: f["train_seconds"] / f["epochs"].where(f["epochs"] > 0))
    table = done.groupby(by, dropna=False).agg(
        num_parameters=("num_parameters", "median"), s_per_epoch=("s_per_epoch", "mean"),
        seeds=("test/rmse", "count"), persistence_rmse=("test/persistence_rmse", "mean"),
        skill_min=("test/skill", "min"), **{f"{m.name}_max": (f"test/{m.name}", "max") for m in WORST},
        **{f"{m.name}_{stat}": (f"test/{m.name}", stat) for m in MEAN for stat in ("mean", "std")})
    failed = (~runs["completed"]).groupby([runs[k] for k in by], dropna=False).sum().rename("failed")
    table = table.join(seed_ensembles(done, by), how="left").join(failed, how="outer")
    table = table.fillna({"seeds": 0, "failed": 0}).astype({"seeds": int, "failed": int})
    return table.sort_values("rmse_mean", na_position="last")


def pm(mean: float, std: float, digits: int = 3) -> str:
    """`mean ± std`, just the mean for a single seed, n/a for none."""
    if mean is None or pd.isna(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if std is None or pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def formatted(table: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard as display strings: `mean ± std` of every metric (just the mean for a single seed)."""
    shown = pd.DataFrame(index=[group_label(k) for k in table.index])
    shown["params"] = [f"{v:,.0f}" if pd.notna(v) else "n/a" for v in table["num_parameters"]]
    shown["s/epoch"] = [f"{v:.2f}" if pd.notna(v) else "n/a" for v in table["s_per_epoch"]]
    shown["seeds"] = table["seeds"].to_numpy()
    for m in MEAN:
        shown[m.label] = [pm(mean, std) for mean, std in zip(table[f"{m.name}_mean"], table[f"{m.name}_std"])]
    shown["persistence RMSE"] = [f"{v:.3f}" if pd.notna(v) else "n/a" for v in table["persistence_rmse"]]
    shown["skill > 0 on every seed"] = ["n/a" if pd.isna(v) else "yes" if v > 0 else "no" for v in table["skill_min"]]
    for m in WORST:
        shown[f"{m.label} (worst seed)"] = [m.format(v) if pd.notna(v) else "n/a" for v in table[f"{m.name}_max"]]
    shown["failed"] = table["failed"].to_numpy()
    return shown


def formatted_ensembles(table: pd.DataFrame) -> pd.DataFrame:
    """The seed ensembles as display strings, best validation RMSE first: choose on validation, never on test."""
    table = table[table["runs"].notna()].sort_values("val_rmse", kind="stable")
    shown = pd.DataFrame(index=[group_label(k) for k in table.index])
    shown["seeds"] = table["runs"].astype(int).to_numpy()
    shown["val RMSE"] = [f"{v:.4f}" if pd.notna(v) else "n/a" for v in table["val_rmse"]]
    shown["val skill"] = [f"{v:.4f}" if pd.notna(v) else "n/a" for v in table["val_skill"]]
    shown["skill per seed"] = table["skill_per_seed"].to_numpy()
    shown["DM p per seed"] = table["dm_p_per_seed"].to_numpy()
    for m in METRICS:
        shown[f"ensemble {m.label}"] = [m.format(v, 4) for v in table[f"ensemble_{m.name}"]]
    shown["persistence RMSE"] = [f"{v:.4f}" for v in table["ensemble_persistence_rmse"]]
    return shown


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
    written = ["leaderboard.md", "leaderboard.csv", "runs.csv"]
    ensembles = table[table["runs"].notna()]
    if len(ensembles):
        text += ("\nSeed ensembles: each group's mean forecast over its seeds, scored like one run, beside each seed's "
                 "test skill and DM p; best validation RMSE first (choose on validation, never on test):\n\n"
                 + markdown(formatted_ensembles(ensembles), " / ".join(by)) + "\n")
        ensembles[ENSEMBLE].to_csv(sweep / "leaderboard_ensembles.csv")
        written.append("leaderboard_ensembles.csv")
    intervals = interval_leaderboard(runs, by)
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

