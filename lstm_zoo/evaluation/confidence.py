"""Which forecasts are indistinguishable from the best (Model Confidence Set), and does any beat a benchmark once
the number of forecasts tried is accounted for (Hansen's studentized SPA test): `arch.bootstrap.MCS` and `SPA`,
the latter with its test statistic studentized here (`StudentizedSPA`: arch 8's is not).

Both resample the loss series with a stationary block bootstrap (Politis & Romano), so the serial dependence of
daily losses (volatile weeks follow volatile weeks) is kept within blocks of `block_size` days on average. The
bootstrap seed makes every p-value reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


class StudentizedSPA(SPA):
    """arch's `SPA` with Hansen's (2005) studentized statistic, the one `studentize=True` promises.

    With d_kt = L_benchmark,t - L_k,t, its mean dbar_k over T days and w_k^2 its long-run variance (arch's
    stationary-bootstrap kernel estimate, Hansen's eq. for omega), the SPA statistic is
    T = max(0, max_k sqrt(T) dbar_k / w_k), and each bootstrap replication b gives
    T*_b = max(0, max_k sqrt(T) (dbar*_kb - mu_k) / w_k), where the consistent re-centring mu_k is dbar_k, or 0 for a
    model far worse than the benchmark (sqrt(T) dbar_k / w_k < -sqrt(2 log log T)). p-value: the share of T*_b >= T
    (the same as > unless T = 0: when no model is ahead on average, p = 1, no evidence against the benchmark).

    arch 8.0 estimates w_k (and uses it for that threshold) but then compares max_k (dbar*_kb - mu_k) with
    max_k dbar_k unscaled, so `studentize` changes nothing and the model with the noisiest loss differential
    dominates the maximum: a clearly better but steady model next to a noisy one goes unnoticed. This subclass
    keeps arch's bootstrap, variances and re-centring and divides both sides by the standard error w_k / sqrt(T).
    Only `pvalues` is studentized (arch's `critical_values` and `better_models` are not used here).
    """

    def compute(self) -> None:
        if self._simulated_vals is None:  # arch: bootstrap means minus the lower / consistent / upper re-centring
            self._simulate_values()
        keep = self._selector
        stderr = np.sqrt(self._loss_diff_var[keep] / self.t)
        statistic = max(float(np.max(self._loss_diff[:, keep].mean(axis=0) / stderr)), 0.0)
        simulated = np.maximum((self._simulated_vals[keep] / stderr[:, None, None]).max(axis=0), 0.0)  # (reps, 3)
        self._pvalues = dict(zip(("lower", "consistent", "upper"), (simulated >= statistic).mean(axis=0)))


def spa_pvalue(benchmark: pd.Series, models: pd.DataFrame, bootstrap: Bootstrap = Bootstrap()) -> float:
    """Hansen's (2005) studentized SPA test of "no model has a lower expected loss than the benchmark": its
    consistent p-value (`StudentizedSPA`).

    A small p-value means that at least one of the models beats the benchmark, accounting for how many were tried.
    A model whose loss differs from the benchmark's by the same amount every day has no variance to studentize by:
    lower by that amount, it beats the benchmark (p = 0, as the DM test's limit); identical or higher, it cannot
    and is left out.
    """
    differential = models.rsub(benchmark, axis=0)  # benchmark - model: > 0 on days the model is better
    constant = differential.max() == differential.min()
    if (constant & (differential.max() > 0)).any():
        return 0.0
    varying = list(differential.columns[~constant])
    if not varying:
        return 1.0
    spa = StudentizedSPA(benchmark, models[varying], block_size=bootstrap.block_size, reps=bootstrap.reps,
                         bootstrap=bootstrap.kind, studentize=True, seed=bootstrap.seed)
    spa.compute()
    return float(spa.pvalues["consistent"])


def spa_against_best(losses: pd.DataFrame, benchmarks: list[str], models: list[str],
                     bootstrap: Bootstrap = Bootstrap()) -> tuple[str | None, float]:
    """The best of the `benchmarks` columns of `losses` (lowest mean loss, chosen on these same days) and the SPA
    p-value of "none of the `models` columns beats it" (`spa_pvalue`); (None, NaN) when either list is empty."""
    if not benchmarks or not models:
        return None, float("nan")
    best = str(losses[benchmarks].mean().idxmin())
    return best, spa_pvalue(losses[best], losses[models], bootstrap)
