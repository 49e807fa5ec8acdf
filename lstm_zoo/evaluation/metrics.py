"""Forecast metrics in price units, for a model and for the persistence baseline on the same days."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from statsmodels.stats.sandwich_covariance import S_hac_simple
from torch import Tensor
from torchmetrics.functional import mean_absolute_error, mean_absolute_percentage_error, mean_squared_error


def persistence_forecast(last: Tensor, horizon: int) -> Tensor:
    """'Tomorrow = today': repeat the last known value for every step ahead, (B,) -> (B, H)."""
    return last.unsqueeze(1).repeat(1, horizon)


def forecast_metrics(pred: Tensor, actual: Tensor) -> dict[str, float]:
    """RMSE, MAE and MAPE (in %) over all steps ahead, and RMSE per step ahead when there are several.

    MAPE is NaN (reported as undefined) when an actual price is zero, instead of torchmetrics' epsilon blow-up.
    """
    pred, actual = pred.double().contiguous(), actual.double().contiguous()  # torchmetrics views them flat
    defined = bool((actual != 0).all())
    metrics = {
        "rmse": mean_squared_error(pred, actual, squared=False).item(),
        "mae": mean_absolute_error(pred, actual).item(),
        "mape": 100 * mean_absolute_percentage_error(pred, actual).item() if defined else float("nan"),
    }
    if pred.shape[1] > 1:
        for step in range(pred.shape[1]):
            metrics[f"rmse_step{step + 1}"] = mean_squared_error(pred[:, step], actual[:, step], squared=False).item()
    return metrics


def directional_accuracy(pred: Tensor, actual: Tensor, last: Tensor) -> float:
    """Share of forecasts whose change from `last` has the sign of the actual change, (B, H) with `last` (B,).

    Days (and steps) on which the actual price did not change have no direction and are left out;
    0.5 is a coin toss. NaN when every actual change is zero.
    """
    actual_sign = torch.sign(actual - last.unsqueeze(1))
    moved = actual_sign != 0
    if not moved.any():
        return float("nan")
    hits = torch.sign(pred - last.unsqueeze(1)) == actual_sign
    return hits[moved].double().mean().item()


def diebold_mariano(errors_a: Tensor, errors_b: Tensor, horizon: int = 1) -> tuple[float, float]:
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
    d = (errors_a.double() ** 2).mean(dim=1) - (errors_b.double() ** 2).mean(dim=1)  # (T,)
    n = d.numel()
    if n < 2:
        return float("nan"), float("nan")
    if bool((d == 0).all()):
        return 0.0, 1.0  # identical losses on every day: no evidence of any difference
    mean = d.mean().item()
    centred = d - mean
    autocov = [(centred[k:] * centred[: n - k]).sum().item() / n for k in range(min(horizon, n))]
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


def compare_with_persistence(pred: Tensor, actual: Tensor, last: Tensor) -> dict[str, float]:
    """How a forecast (B, H) fares against persistence on the same days: skill, direction, Diebold-Mariano.

    skill = 1 - RMSE_model / RMSE_persistence (> 0: better than "tomorrow = today"); dm_stat < 0 with a small
    dm_pvalue: the model's squared errors are significantly smaller than persistence's.
    """
    pred, actual, last = pred.double().contiguous(), actual.double().contiguous(), last.double()
    persistence = persistence_forecast(last, actual.shape[1])
    rmse_model = mean_squared_error(pred, actual, squared=False).item()
    rmse_persistence = mean_squared_error(persistence, actual, squared=False).item()
    statistic, pvalue = diebold_mariano(pred - actual, persistence - actual, horizon=actual.shape[1])
    return {
        "skill": 1 - rmse_model / rmse_persistence if rmse_persistence > 0 else float("nan"),
        "directional_accuracy": directional_accuracy(pred, actual, last),
        "dm_stat": statistic,
        "dm_pvalue": pvalue,
    }
