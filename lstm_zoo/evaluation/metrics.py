"""Forecast metrics in price units, for a model and for the persistence baseline on the same days.

`METRICS` is the one table of test metrics and `score(frame)` computes them from a predictions frame (the rows of
a run's predictions.csv): the run's metrics.json, the summary it prints and every leaderboard read that table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from statsmodels.stats.sandwich_covariance import S_hac_simple

if TYPE_CHECKING:  # scripts/compare.py scores without torch
    from torch import Tensor


def persistence_forecast(last: Tensor, horizon: int) -> Tensor:
    """'Tomorrow = today': repeat the last known value for every step ahead, (B,) -> (B, H)."""
    return last.unsqueeze(1).repeat(1, horizon)


def directional_accuracy(pred: ArrayLike, actual: ArrayLike, last: ArrayLike) -> float:
    """Share of forecasts whose change from `last` has the sign of the actual change, (T, H) with `last` (T,).

    Days (and steps) on which the actual price did not change have no direction and are left out;
    0.5 is a coin toss. NaN when every actual change is zero.
    """
    pred, actual, last = (np.asarray(a, dtype=np.float64) for a in (pred, actual, last))
    actual_sign = np.sign(actual - last[:, None])
    moved = actual_sign != 0
    if not moved.any():
        return float("nan")
    return float((np.sign(pred - last[:, None]) == actual_sign)[moved].mean())


def diebold_mariano(errors_a: ArrayLike, errors_b: ArrayLike, horizon: int = 1) -> tuple[float, float]:
    """Diebold-Mariano test of equal squared-error accuracy with the Harvey-Leybourne-Newbold correction.

    errors (T, H): forecast errors of two forecasts of the same targets, one row per forecast origin; the
    loss differential d_t is the difference of their mean squared errors over the H steps. Its long-run
    variance sums the autocovariances up to lag `horizon` - 1 (overlapping h-step forecasts). As R's
    forecast::dm.test: when that sum is not positive the whole test is redone with h = 1 (the HLN factor
    included), and the p-value is two-sided from Student's t with T - 1 degrees of freedom. Where R stops
    (zero variance at h = 1: a constant loss differential), a constant non-zero differential gives the limit,
    an infinite statistic with p = 0 (one forecast is better by the same amount on every day), and identical
    losses give (0, 1). A negative statistic means `a` is more accurate.
    """
    a, b = np.asarray(errors_a, dtype=np.float64), np.asarray(errors_b, dtype=np.float64)
    d = (a**2).mean(axis=1) - (b**2).mean(axis=1)  # (T,)
    n = d.size
    if n < 2:
        return float("nan"), float("nan")
    if not d.any():
        return 0.0, 1.0  # identical losses on every day: no evidence of any difference
    mean = float(d.mean())
    centred = d - mean
    autocov = [float((centred[k:] * centred[: n - k]).sum()) / n for k in range(min(horizon, n))]
    variance = autocov[0] + 2 * sum(autocov[1:])
    if variance <= 0:
        if horizon > 1:
            return diebold_mariano(errors_a, errors_b, horizon=1)
        return math.copysign(math.inf, mean), 0.0
    statistic = mean / math.sqrt(variance / n)
    statistic *= math.sqrt((n + 1 - 2 * horizon + horizon * (horizon - 1) / n) / n)  # HLN small-sample correction
    return statistic, float(2 * stats.t.sf(abs(statistic), df=n - 1))


def newey_west_lags(days: int, horizon: int = 1) -> int:
    """Bandwidth of the pooled DM test: floor(4 (T/100)^(2/9)) lags (Newey & West 1994's rule of thumb, statsmodels'
    default; 7 for 2,000 days), and at least the h - 1 lags that overlapping h-step forecasts need."""
    return max(int(math.floor(4 * (days / 100) ** (2 / 9))), horizon - 1)


def diebold_mariano_hac(loss_a: np.ndarray, loss_b: np.ndarray, horizon: int = 1) -> tuple[float, float]:
    """Diebold-Mariano test of equal expected loss on two per-day loss series, with a Newey-West long-run variance.

    For pooled series (several tickers or folds): their daily loss differential is serially correlated (volatile
    weeks follow volatile weeks) even at h = 1, which R's dm.test (`diebold_mariano`, autocovariances up to lag
    h - 1 only) ignores, overstating the evidence. The long-run variance here is the Bartlett-kernel (Newey-West)
    sum of autocovariances up to `newey_west_lags(T, h)` (statsmodels' `S_hac_simple`, which is never negative);
    statistic = mean(d) / sqrt(variance / T), p-value two-sided from Student's t with T - 1 degrees of freedom (no
    HLN factor: it corrects the truncated h - 1 lag estimator). Degenerate cases as `diebold_mariano`. A negative
    statistic means `a` has the lower loss.
    """
    d = np.asarray(loss_a, dtype=float) - np.asarray(loss_b, dtype=float)
    n = d.size
    if n < 2:
        return float("nan"), float("nan")
    if not d.any():
        return 0.0, 1.0
    mean = float(d.mean())
    variance = float(S_hac_simple(d - mean, nlags=newey_west_lags(n, horizon))[0, 0]) / n
    if variance <= 0:  # a constant non-zero differential
        return math.copysign(math.inf, mean), 0.0
    statistic = mean / math.sqrt(variance / n)
    return statistic, float(2 * stats.t.sf(abs(statistic), df=n - 1))


def format_pvalue(p: float | None) -> str:
    """A p-value for people: never "0"; one below float64's range (it underflows to 0) reads "< 1e-300"."""
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 1e-300" if p < 1e-300 else f"{p:.3g}"


def step_columns(frame: pd.DataFrame, name: str) -> list[str]:
    """The columns of `name` for every step ahead: actual, actual_t+2, ... (predictions.csv layout)."""
    return [name] + [c for c in frame.columns if c.startswith(f"{name}_t+")]


def forecast_arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A predictions frame's forecasts (T, H), actual prices (T, H) and last known prices (T,), float64."""
    pred = frame[step_columns(frame, "predicted")].to_numpy(dtype=np.float64)
    actual = frame[step_columns(frame, "actual")].to_numpy(dtype=np.float64)
    return pred, actual, frame["persistence"].to_numpy(dtype=np.float64)  # persistence = the last known value


def rmse(pred: np.ndarray, actual: np.ndarray, last: np.ndarray | None = None) -> float:
    return float(np.sqrt(np.mean((pred - actual) ** 2)))


def mae(pred: np.ndarray, actual: np.ndarray, last: np.ndarray | None = None) -> float:
    return float(np.mean(np.abs(pred - actual)))


def mape(pred: np.ndarray, actual: np.ndarray, last: np.ndarray | None = None) -> float:
    """In %; NaN (reported as undefined) when an actual price is zero, rather than an epsilon blow-up."""
    return float(100 * np.mean(np.abs(pred - actual) / np.abs(actual))) if np.all(actual != 0) else math.nan


def skill(pred: np.ndarray, actual: np.ndarray, last: np.ndarray) -> float:
    """1 - RMSE / persistence RMSE on the same days: > 0 is better than 'tomorrow = today'."""
    base = rmse(np.broadcast_to(last[:, None], actual.shape), actual)
    return 1 - rmse(pred, actual) / base if base > 0 else math.nan


def dm_stat(pred: np.ndarray, actual: np.ndarray, last: np.ndarray) -> float:
    """Diebold-Mariano statistic (R's dm.test) of the forecast's squared errors against persistence's: < 0 better."""
    return diebold_mariano(pred - actual, last[:, None] - actual, horizon=actual.shape[1])[0]


def dm_pvalue(pred: np.ndarray, actual: np.ndarray, last: np.ndarray) -> float:
    """The two-sided p-value of `dm_stat`."""
    return diebold_mariano(pred - actual, last[:, None] - actual, horizon=actual.shape[1])[1]


@dataclass(frozen=True)
class Metric:
    """One test metric, `fn(pred (T, H), actual (T, H), last (T,))` in float64; metrics.json's `test/<name>`.

    persistence: also scored for the persistence forecast (test/persistence_<name>); persistence_value: what
    persistence scores by definition where it is not scored (skill 0). pooled: scale-free, so also computed over
    the forecasts of several tickers at once (test/pooled/*, the backtest's pooled table). over_seeds: how a
    leaderboard sums up a configuration's seeds: "mean" (mean ± std), "max" (the worst, for p-values) or None.
    pvalue: shown as a p-value (`format_pvalue`: never "0").
    """

    name: str
    label: str
    fn: Callable[[np.ndarray, np.ndarray, np.ndarray], float]
    persistence: bool = False
    persistence_value: float | None = None
    pooled: bool = False
    over_seeds: str | None = "mean"
    pvalue: bool = False

    def format(self, value: float | None, digits: int = 3) -> str:
        if self.pvalue:
            return format_pvalue(value)
        return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "n/a"


# Every test metric, in the order tables show them: adding a row here adds it to score(), metrics.json, the
# summary printed after a run and every leaderboard
METRICS = (
    Metric("rmse", "RMSE", rmse, persistence=True),
    Metric("mae", "MAE", mae, persistence=True),
    Metric("mape", "MAPE %", mape, persistence=True, pooled=True),
    Metric("skill", "skill", skill, persistence_value=0.0),
    Metric("directional_accuracy", "dir. acc.", directional_accuracy, pooled=True),
    Metric("dm_stat", "DM stat", dm_stat, over_seeds=None),
    Metric("dm_pvalue", "DM p", dm_pvalue, over_seeds="max", pvalue=True),
)


def score(frame: pd.DataFrame) -> dict[str, float]:
    """Every metric of a predictions frame (predictions.csv's layout) in float64, keyed as metrics.json without
    `test/`: <name> for the forecast, persistence_<name> for persistence, and rmse_step<k> per step ahead."""
    pred, actual, last = forecast_arrays(frame)
    persistence = np.broadcast_to(last[:, None], actual.shape)
    scores = {m.name: m.fn(pred, actual, last) for m in METRICS}
    scores.update({f"persistence_{m.name}": m.fn(persistence, actual, last) for m in METRICS if m.persistence})
    if actual.shape[1] > 1:
        for who, forecast in (("", pred), ("persistence_", persistence)):
            scores.update({f"{who}rmse_step{k + 1}": rmse(forecast[:, k], actual[:, k])
                           for k in range(actual.shape[1])})
    return scores
