"""Which forecasts are indistinguishable from the best (Model Confidence Set), and does any beat a benchmark once
the number of forecasts tried is accounted for (Hansen's SPA test): `arch.bootstrap.MCS` and `SPA`.

Both resample the loss series with a stationary block bootstrap (Politis & Romano), so the serial dependence of
daily losses (volatile weeks follow volatile weeks) is kept within blocks of `block_size` days on average. The
bootstrap seed makes every p-value reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from arch.bootstrap import MCS, SPA


@dataclass(frozen=True)
class Bootstrap:
    """Block bootstrap settings shared by the MCS and SPA (compare.py --block-size, --reps, --bootstrap-seed)."""

    block_size: int = 20  # mean block length in days: about a trading month
    reps: int = 1000
    seed: int = 0
    kind: str = "stationary"


def _distinct(losses: pd.DataFrame) -> dict[str, list[str]]:
    """Columns grouped by identical loss series (e.g. several forecasts equal to persistence), first one as key.

    Identical columns have a loss differential of zero with zero variance, which the bootstrap statistics would
    divide by; they are tested once and share the result.
    """
    groups: dict[str, list[str]] = {}
    for column in losses.columns:
        twin = next((key for key in groups if losses[key].equals(losses[column])), None)
        groups.setdefault(twin or column, []).append(column)
    return groups


def confidence_set_pvalues(losses: pd.DataFrame, bootstrap: Bootstrap = Bootstrap()) -> pd.Series:
    """MCS p-value of every column of `losses` (T days x forecasts, lower is better; Hansen, Lunde & Nason 2011).

    A forecast is in the confidence set at level `size` (e.g. 0.10: the set that contains the best forecast with
    90% probability) when its p-value is at least `size`; the best one always has p-value 1.
    """
    if losses.isna().any().any():
        raise ValueError("the loss series have missing days: align them on common days before the MCS")
    groups = _distinct(losses)
    if len(groups) == 1:
        return pd.Series(1.0, index=losses.columns, name="mcs_pvalue")
    mcs = MCS(losses[list(groups)], size=0.1, reps=bootstrap.reps, block_size=bootstrap.block_size, method="R",
              bootstrap=bootstrap.kind, seed=bootstrap.seed)
    mcs.compute()
    pvalues = mcs.pvalues["Pvalue"]
    return pd.Series({c: float(pvalues[key]) for key, members in groups.items() for c in members},
                     name="mcs_pvalue")[list(losses.columns)]


def spa_pvalue(benchmark: pd.Series, models: pd.DataFrame, bootstrap: Bootstrap = Bootstrap()) -> float:
    """Hansen's (2005) SPA test of "no model has a lower expected loss than the benchmark": its consistent p-value.

    A small p-value means that at least one of the models beats the benchmark, accounting for how many were tried.
    Models identical to the benchmark cannot beat it and are left out (their loss differential has no variance).
    """
    distinct = [c for c in models.columns if not models[c].equals(benchmark)]
    if not distinct:
        return 1.0
    spa = SPA(benchmark, models[distinct], block_size=bootstrap.block_size, reps=bootstrap.reps,
              bootstrap=bootstrap.kind, studentize=True, seed=bootstrap.seed)
    spa.compute()
    return float(spa.pvalues["consistent"])
