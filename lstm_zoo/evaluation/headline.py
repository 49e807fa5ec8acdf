"""The headline table of a study compared by two keys (`scripts/compare.py <sweep> --by model
data.target_transform`): one row per value of the first key, the second key's values side by side, each with its
pooled rel. MSE, skill, DM p and MCS membership, then both SPA p-values. compare.py writes it as headline.md; the
README's result table is that file."""

from __future__ import annotations

import pandas as pd

from lstm_zoo.evaluation.leaderboard import pm
from lstm_zoo.evaluation.metrics import format_pvalue

PERSISTENCE = "persistence"  # the benchmark's row in every pooled table


def membership(row: pd.Series, sizes: tuple[float, ...]) -> str:
    """`10% and 25%`, `10%`, or `out`: the MCS levels whose confidence set keeps the configuration."""
    levels = [f"{size:.0%}" for size in sizes if row[f"in_mcs_{size:g}"]]
    return " and ".join(levels) if levels else "out"


def headline(tables: dict, by: list[str], sizes: tuple[float, ...]) -> str:
    """The Markdown table and the two SPA sentences, from backtest_tables' numbers (its `pooled` table is indexed by
    "<first> / <second>" labels and persistence)."""
    if len(by) != 2:
        raise ValueError(f"a headline table needs exactly two --by keys, not {by}")
    pooled = tables["pooled"]
    configs = pooled.drop(index=PERSISTENCE)
    split = configs.index.str.rsplit(" / ", n=1)
    firsts, seconds = [s[0] for s in split], [s[1] for s in split]
    columns = sorted(set(seconds))
    order = configs.assign(first=firsts).groupby("first")["rel_mse_mean"].min().sort_values().index
    header = [by[0], "kind"]
    for value in columns:
        header += [f"`{value}`: rel. MSE", "skill", "DM p", "in MCS"]
    persistence = pooled.loc[PERSISTENCE]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|---:|---:|---|" * len(columns),
             "| " + " | ".join([PERSISTENCE, "the benchmark", "1.0000", "0.0000", "",
                                membership(persistence, sizes), *[""] * 4 * (len(columns) - 1)]) + " |"]
    for first in order:
        cells = [f"`{first}`", ""]
        for value in columns:
            label = f"{first} / {value}"
            if label not in configs.index:
                cells += ["n/a"] * 4
                continue
            row = configs.loc[label]
            cells[1] = "fitted" if pd.notna(row["fitted"]) and bool(row["fitted"]) else "trained"
            cells += [pm(row["rel_mse_mean"], row.get("rel_mse_std"), 4), f"{row['skill_mean']:.4f}",
                      format_pvalue(row["dm_p"]), membership(row, sizes)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"SPA p of 'no configuration beats persistence' ({len(configs)} configurations): "
                  f"{format_pvalue(tables['spa_p'])}."]
    if tables["best_baseline"] is not None:
        lines.append(f"SPA p of 'no trained model beats the best baseline' ({tables['best_baseline']}, against "
                     f"{len(tables['trained'])} trained configurations): {format_pvalue(tables['spa_baseline_p'])}.")
    return "\n".join(lines) + "\n"
