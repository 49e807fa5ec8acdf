"""Leaderboard of a walk-forward or multi-ticker sweep (`scripts/compare.py` on such a sweep).

`python scripts/compare.py <sweep> [--by model data.target_transform]`: a configuration is one value of the --by
keys; its runs differ in fold (`backtest.fold`), seed and, for per-ticker models, ticker. Per configuration and
seed the out-of-sample forecasts of all its runs are pooled into one series (every ticker-day once), then:

- pooled table: scale-free metrics over all tickers and folds (`lstm_zoo.evaluation.pooling`), mean ± std over
  seeds, a Diebold-Mariano test against persistence and the Model Confidence Set p-value on the configuration's
  loss series (each day's relative loss averaged over its seeds: the configuration as a recipe, one run of it);
- per-fold table and plot: the pooled skill of each fold (test period), mean ± std over seeds;
- per-ticker table: RMSE, MAE, MAPE, skill, directional accuracy and DM in the ticker's price units;
- the MCS at 10% and 25% over all configurations plus persistence, and Hansen's SPA tests of "no configuration
  beats persistence" and, when the sweep has both, "no trained model beats the best baseline" (the configuration
  of a model fit without gradient descent, `FittedForecaster`, with the lowest pooled loss), said in words and
  written to leaderboard.json.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from hydra.utils import get_class  # noqa: E402

from lstm_zoo.evaluation.confidence import (  # noqa: E402
    Bootstrap,
    confidence_set_pvalues,
    spa_against_best,
    spa_pvalue,
)
from lstm_zoo.evaluation.headline import PERSISTENCE, headline  # noqa: E402
from lstm_zoo.evaluation.leaderboard import markdown, pm  # noqa: E402
from lstm_zoo.evaluation.metrics import METRICS, format_pvalue, score, step_columns  # noqa: E402
from lstm_zoo.evaluation.pooling import is_single_split, pooled_dm, pooled_metrics, seed_mean_losses  # noqa: E402
from lstm_zoo.evaluation.sweep import code_versions, group_label, read_forecasts, read_sweep, sweep_keys  # noqa: E402
from lstm_zoo.records import write_json  # noqa: E402

POOLED = [m for m in METRICS if m.pooled and m.over_seeds == "mean"]  # scale-free: pooled over tickers
PER_TICKER = [m for m in METRICS if m.over_seeds == "mean"]  # in the ticker's price units


def fitted_configurations(runs: pd.DataFrame, by: list[str]) -> set[str]:
    """Labels of the configurations whose completed runs all train a model fit without gradient descent: a
    subclass of `FittedForecaster` (drift, mean, linear, arima, ets) as the run config's `model._target_`."""
    from lstm_zoo.models.fitted import FittedForecaster  # loads Lightning: compare.py on other sweeps does not

    def fitted(target: object) -> bool:
        return isinstance(target, str) and issubclass(get_class(target), FittedForecaster)

    done = runs[runs["completed"]]
    return {group_label(key) for key, group in done.groupby(by, dropna=False)
            if group["model_target"].map(fitted).all()}


def dm_pvalue(loss: pd.Series, persistence_loss: pd.Series, horizon: int, single_split: bool) -> float:
    """Diebold-Mariano p-value of a per-day loss series against persistence's: Newey-West long-run variance when
    the series pools several tickers or folds, R's dm.test for one ticker in one fold (`pooled_dm`)."""
    return pooled_dm(loss.to_numpy(), persistence_loss.to_numpy(), horizon, single_split)[1]


def mean_std(values: list[float]) -> tuple[float, float]:
    clean = [v for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return math.nan, math.nan
    return float(np.mean(clean)), float(np.std(clean, ddof=1)) if len(clean) > 1 else math.nan


def fold_label(frame: pd.DataFrame) -> str:
    """A test period as its calendar year when it is one, else its first and last month."""
    first, last = frame["date"].min(), frame["date"].max()
    return str(first.year) if first.year == last.year else f"{first:%Y-%m}..{last:%Y-%m}"


def backtest_tables(forecasts: dict[str, dict[int, pd.DataFrame]], bootstrap: Bootstrap,
                    sizes: tuple[float, ...], fitted: Collection[str] = ()) -> dict:
    """The pooled, per-fold and per-ticker tables, the daily loss matrix, MCS p-values and the SPA p-values
    against persistence and against the best of the `fitted` configurations (baselines)."""
    losses = {config: seed_mean_losses(per_seed) for config, per_seed in forecasts.items()}
    common = sorted(set.intersection(*(set(frame.index) for frame in losses.values())))
    reference = next(iter(losses.values())).loc[common]
    for config, frame in losses.items():  # the same ticker-days must hold the same prices in every configuration
        if not np.allclose(frame.loc[common, "actual"], reference["actual"], rtol=1e-6):
            raise SystemExit(f"configuration {config!r} forecasts other prices than {next(iter(losses))!r} on the "
                             "same ticker-days (another data.target or data file?). Fix: compare runs of one series, "
                             "or put the differing key in --by and compare them separately.")
    daily = pd.DataFrame({config: frame.loc[common, "loss"].groupby(level="date").mean()
                          for config, frame in losses.items()})
    daily[PERSISTENCE] = reference["persistence_loss"].groupby(level="date").mean()
    horizon = len(step_columns(next(iter(next(iter(forecasts.values())).values())), "actual"))
    mcs = confidence_set_pvalues(daily, bootstrap)
    spa = spa_pvalue(daily[PERSISTENCE], daily.drop(columns=PERSISTENCE), bootstrap)
    trained = [c for c in forecasts if c not in fitted]
    best_baseline, spa_baseline = spa_against_best(daily, [c for c in forecasts if c in fitted], trained, bootstrap)

    pooled, per_fold, per_ticker = [], [], []
    for config, per_seed in forecasts.items():
        seeds = [pooled_metrics(frame) for frame in per_seed.values()]
        row = {"config": config, "fitted": config in fitted, "seeds": len(per_seed),
               "folds": len(set().union(*(set(f["fold"]) for f in per_seed.values()))),
               "tickers": len(set().union(*(set(f["ticker"]) for f in per_seed.values()))),
               "days": len(daily), "dm_p": dm_pvalue(daily[config], daily[PERSISTENCE], horizon,
                                                   is_single_split(losses[config].reset_index())),
               "mcs_p": mcs[config], **{f"in_mcs_{size:g}": bool(mcs[config] >= size) for size in sizes}}
        for key in ("rel_mse", "skill", *(m.name for m in POOLED)):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([m[key] for m in seeds])
        pooled.append(row)
        folds = sorted(set().union(*(set(f["fold"]) for f in per_seed.values())))
        for fold in folds:
            parts = [frame[frame["fold"] == fold] for frame in per_seed.values() if (frame["fold"] == fold).any()]
            skill_mean, skill_std = mean_std([pooled_metrics(part)["skill"] for part in parts])
            per_fold.append({"config": config, "fold": fold, "test": fold_label(parts[0]), "seeds": len(parts),
                             "skill_mean": skill_mean, "skill_std": skill_std})
        mean_losses = losses[config]
        for ticker in sorted(set().union(*(set(f["ticker"]) for f in per_seed.values()))):
            metrics = [score(frame[frame["ticker"] == ticker]) for frame in per_seed.values()
                       if (frame["ticker"] == ticker).any()]
            mine = mean_losses.loc[ticker]
            row = {"ticker": ticker, "config": config, "seeds": len(metrics),
                   "persistence_rmse": metrics[0]["persistence_rmse"],
                   "dm_p": dm_pvalue(mine["error"], mine["persistence_error"], horizon, mine["fold"].nunique() == 1)}
            for m in PER_TICKER:
                row[f"{m.name}_mean"], row[f"{m.name}_std"] = mean_std([metric[m.name] for metric in metrics])
            per_ticker.append(row)
    first = pooled_metrics(next(iter(next(iter(forecasts.values())).values())))
    persistence = {"config": PERSISTENCE, "days": len(daily), "rel_mse_mean": 1.0, "skill_mean": 0.0,
                   **{f"{m.name}_mean": first[f"persistence_{m.name}"] for m in POOLED if m.persistence},
                   "mcs_p": mcs[PERSISTENCE], **{f"in_mcs_{size:g}": bool(mcs[PERSISTENCE] >= size) for size in sizes}}
    pooled_table = pd.DataFrame([*pooled, persistence]).set_index("config").sort_values("rel_mse_mean")
    return {"pooled": pooled_table, "per_fold": pd.DataFrame(per_fold),
            "per_ticker": pd.DataFrame(per_ticker).sort_values(["ticker", "rmse_mean"]), "daily": daily,
            "mcs": mcs, "spa_p": spa, "best_baseline": best_baseline, "spa_baseline_p": spa_baseline,
            "trained": trained,
            "dropped_days": {c: len(f) - len(common) for c, f in losses.items()}}


def verdict(tables: dict, sizes: tuple[float, ...], bootstrap: Bootstrap) -> list[str]:
    """The MCS membership and the SPA result in words."""
    mcs, configs = tables["mcs"], [c for c in tables["mcs"].index if c != PERSISTENCE]
    method = (f"{bootstrap.kind} block bootstrap, mean block {bootstrap.block_size} days, {bootstrap.reps} "
              f"replications, seed {bootstrap.seed}")
    lines = [f"Model confidence set (Hansen, Lunde & Nason 2011, range statistic; {method}) over the {len(configs)} "
             f"configuration(s) and persistence, on {len(tables['daily'])} days of pooled relative losses:"]
    for size in sizes:
        members = [c for c in mcs.sort_values(ascending=False).index if mcs[c] >= size]
        lines.append(f"- at {size:.0%} ({1 - size:.0%} confidence): {', '.join(members)}"
                     f"{'' if PERSISTENCE in members else ' (persistence is excluded)'}")
    spa = tables["spa_p"]
    decision = ("rejected at 5%: at least one configuration beats persistence" if spa < 0.05 else
                "not rejected at 5%: no configuration is shown to beat persistence")
    lines.append(f"SPA test (Hansen 2005, consistent p-value; same bootstrap) of 'no configuration beats persistence' "
                 f"over the {len(configs)} configuration(s) tried: p = {format_pvalue(spa)}, {decision}.")
    best, trained = tables["best_baseline"], tables["trained"]
    if best is not None:
        spa = tables["spa_baseline_p"]
        decision = ("rejected at 5%: at least one trained model beats it" if spa < 0.05 else
                    "not rejected at 5%: no trained model is shown to beat it")
        lines.append(f"SPA test (same bootstrap) of 'no trained model beats the best baseline': benchmark {best}, the "
                     "configuration fit without gradient descent with the lowest pooled loss (chosen on these same "
                     f"days), against the {len(trained)} trained configuration(s): p = {format_pvalue(spa)}, "
                     f"{decision}.")
    elif not trained:
        lines.append("Every configuration is a baseline fit without gradient descent: no trained model to test "
                     "against the best of them.")
    return lines


def shown_tables(tables: dict, sizes: tuple[float, ...], name: str) -> dict[str, pd.DataFrame]:
    """Display strings of the three tables; `name` heads the configuration column."""
    table = tables["pooled"]
    pooled = pd.DataFrame(index=table.index)
    for column in ("seeds", "folds", "tickers", "days"):
        pooled[column] = ["" if pd.isna(v) else f"{v:.0f}" for v in table[column]]
    pooled["rel. MSE"] = [pm(m, s, 4) for m, s in zip(table["rel_mse_mean"], table.get("rel_mse_std"))]
    pooled["skill"] = [pm(m, s, 4) for m, s in zip(table["skill_mean"], table.get("skill_std"))]
    for m in POOLED:
        pooled[m.label] = [pm(mean, std) for mean, std in zip(table[f"{m.name}_mean"], table[f"{m.name}_std"])]
    pooled["DM p (seed-mean loss)"] = [format_pvalue(v) for v in table["dm_p"]]
    pooled["MCS p"] = [f"{v:.3f}" for v in table["mcs_p"]]
    for size in sizes:
        pooled[f"in MCS {size:.0%}"] = ["yes" if v else "no" for v in table[f"in_mcs_{size:g}"]]

    folds = tables["per_fold"]
    per_fold = folds.assign(cell=[pm(m, s) for m, s in zip(folds["skill_mean"], folds["skill_std"])]).pivot(
        index="config", columns="fold", values="cell")
    labels = folds.drop_duplicates("fold").set_index("fold")["test"]
    per_fold.columns = [f"fold {f} ({labels[f]})" for f in per_fold.columns]
    per_fold = per_fold.loc[[c for c in table.index if c in per_fold.index]].fillna("n/a")

    tickers = tables["per_ticker"]
    per_ticker = pd.DataFrame({name: tickers["config"].to_numpy(), "seeds": tickers["seeds"].to_numpy()},
                              index=tickers["ticker"].to_numpy())
    for m in PER_TICKER:
        per_ticker[m.label] = [pm(mean, std) for mean, std in
                               zip(tickers[f"{m.name}_mean"], tickers[f"{m.name}_std"])]
    per_ticker["persistence RMSE"] = [f"{v:.3f}" for v in tickers["persistence_rmse"]]
    per_ticker["DM p (seed-mean loss)"] = [format_pvalue(v) for v in tickers["dm_p"]]
    return {"pooled": pooled, "per_fold": per_fold, "per_ticker": per_ticker}


def plot_skill_per_fold(per_fold: pd.DataFrame, path: Path) -> None:
    """Pooled skill of each fold per configuration (mean ± std over seeds); 0 is persistence. The y axis is linear
    within ±0.05 of persistence and logarithmic beyond, so a study's near-persistence models and its far-off ones
    are both readable; with many configurations the legend stands beside the plot."""
    configs = per_fold["config"].unique()
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * per_fold["fold"].nunique() + 3) + (4 if len(configs) > 12 else 0),
                                    max(4.5, 0.22 * len(configs) + 1)))
    colors = plt.get_cmap("tab20").colors
    labels = per_fold.drop_duplicates("fold").sort_values("fold")
    for i, (config, rows) in enumerate(per_fold.groupby("config", sort=False)):
        rows = rows.sort_values("fold")
        ax.errorbar(rows["fold"], rows["skill_mean"], yerr=rows["skill_std"].fillna(0), marker="o", capsize=3,
                    label=config, color=colors[i % len(colors)], linestyle=("-", "--", ":")[i // len(colors) % 3])
    ax.axhline(0, color="red", linestyle="--", label="persistence (tomorrow = today)")
    if per_fold["skill_mean"].abs().max() > 0.5:
        ax.set_yscale("symlog", linthresh=0.05)
    ax.set_xticks(labels["fold"], [f"{f}\n{t}" for f, t in zip(labels["fold"], labels["test"])])
    ax.set(xlabel="fold (test period)", ylabel="skill = 1 - sqrt(MSE / persistence MSE)",
           title="Out-of-sample skill per fold, pooled over tickers (mean ± std over seeds)")
    if len(configs) > 12:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare_backtest(sweep: Path, by: list[str], bootstrap: Bootstrap | None = None,
                     sizes: tuple[float, ...] = (0.10, 0.25), allow_mixed_code: bool = False) -> dict:
    """Build, print and write the walk-forward leaderboard of `sweep`; returns the numeric tables."""
    bootstrap = bootstrap or Bootstrap()
    runs = read_sweep(sweep, sweep_keys(by), allow_mixed_code)
    forecasts = read_forecasts(runs, by)
    if not forecasts:
        raise SystemExit(f"{sweep}: no completed run with predictions.csv. Fix: pass a sweep of finished runs.")
    tables = backtest_tables(forecasts, bootstrap, sizes, fitted_configurations(runs, by))
    name = " / ".join(by)
    shown = shown_tables(tables, sizes, name)
    failed = runs.loc[~runs["completed"], ["run", "status"]]
    text = ["## Pooled over folds and tickers (scale-free)", "", markdown(shown["pooled"], name), "",
            "rel. MSE: the mean over days of each day's squared error relative to persistence's MSE on the same ticker "
            "and fold, averaged over tickers, divided by persistence's (< 1: better than persistence); skill = 1 - "
            "sqrt(rel. MSE); mean ± std over seeds. DM p and MCS p use each day's loss averaged over the seeds.", "",
            *verdict(tables, sizes, bootstrap), "", "## Skill per fold (pooled over tickers, mean ± std over seeds)",
            "", markdown(shown["per_fold"], name), "", "## Per ticker (price units, all folds pooled)", "",
            markdown(shown["per_ticker"], "ticker"), ""]
    dropped = {c: n for c, n in tables["dropped_days"].items() if n}
    notes = [f"{len(runs)} runs in {sweep}: {int(runs['completed'].sum())} completed, {len(failed)} failed or "
             "incomplete."]
    if code_versions(runs):
        notes.append(f"Runs of different code pooled (--allow-mixed-code): {code_versions(runs)}.")
    if dropped:
        notes.append(f"Ticker-days forecast by only some configurations, left out of the MCS, SPA and DM: {dropped}.")
    if len(failed):
        notes += ["", "Failed or incomplete runs:"] + [f"- {r.run}: {r.status}" for r in failed.itertuples()]
    report = "\n".join(text + notes) + "\n"
    (sweep / "leaderboard.md").write_text(report)
    tables["pooled"].to_csv(sweep / "pooled.csv")
    tests = {"days": len(tables["daily"]), "spa_p_vs_persistence": tables["spa_p"],
             "best_baseline": tables["best_baseline"], "spa_p_vs_best_baseline": tables["spa_baseline_p"],
             "trained": tables["trained"], "mcs_p": tables["mcs"].to_dict(), "bootstrap": vars(bootstrap)}
    write_json(sweep / "leaderboard.json", tests)
    tables["per_fold"].to_csv(sweep / "per_fold.csv", index=False)
    tables["per_ticker"].to_csv(sweep / "per_ticker.csv", index=False)
    tables["daily"].to_csv(sweep / "daily_losses.csv")
    runs.drop(columns=["predictions"], errors="ignore").to_csv(sweep / "runs.csv", index=False)
    plot_skill_per_fold(tables["per_fold"], sweep / "skill_per_fold.png")
    if len(by) == 2:  # e.g. --by model data.target_transform: the targets side by side, the README's table
        (sweep / "headline.md").write_text(headline(tables, by, sizes))
    print(report + "\nWrote leaderboard.md, leaderboard.json, pooled.csv, per_fold.csv, per_ticker.csv, "
          f"daily_losses.csv, runs.csv, skill_per_fold.png{', headline.md' if len(by) == 2 else ''} to {sweep}")
    return tables
