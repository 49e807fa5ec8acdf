"""Prediction intervals: split-conformal intervals from validation errors, and scores of quantile forecasts.

A forecast with uncertainty is a set of quantiles per step ahead, (B, H, Q) ordered along Q, at levels `quantiles`
(e.g. 0.1, 0.5, 0.9). A quantile head gives them directly; split-conformal gives, for a central level L, the
quantiles (1 - L) / 2 and (1 + L) / 2 as the point forecast -/+ the conformal radius, with the point forecast as
the median. Both are scored the same way: coverage and mean width of each central interval, the pinball loss, and
the CRPS of the distribution the quantiles describe.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from lstm_zoo.errors import ConfigError


def check_quantiles(quantiles: Sequence[float] | None, field: str = "model.quantiles") -> tuple[float, ...] | None:
    """The quantile levels of a quantile head: in (0, 1), strictly increasing (so unique), with the median 0.5."""
    if quantiles is None:
        return None
    try:
        levels = tuple(float(q) for q in quantiles)
    except (TypeError, ValueError):
        raise ConfigError(f"{field}={quantiles!r} is not a list of numbers. Fix: {field}=[0.1,0.5,0.9]") from None
    example = f"Fix: {field}=[0.1,0.5,0.9] (or null for a point forecast)."
    if not levels:
        raise ConfigError(f"{field}=[] is empty. {example}")
    outside = [q for q in levels if not 0 < q < 1]
    if outside:
        raise ConfigError(f"{field}={list(levels)}: {outside} outside (0, 1); quantile levels are probabilities "
                          f"strictly between 0 and 1. {example}")
    duplicated = sorted({q for q in levels if levels.count(q) > 1})
    if duplicated:
        raise ConfigError(f"{field}={list(levels)}: {duplicated} duplicated; each level once. {example}")
    if list(levels) != sorted(levels):
        raise ConfigError(f"{field}={list(levels)} is not sorted: list the levels in increasing order, "
                          f"{field}={sorted(levels)}.")
    if 0.5 not in levels:
        raise ConfigError(f"{field}={list(levels)} lacks 0.5: the median is the point forecast. "
                          f"Fix: {field}={sorted({*levels, 0.5})}.")
    return levels


def check_levels(levels: Sequence[float], field: str = "interval_levels") -> tuple[float, ...]:
    """Central interval levels for conformal intervals (0.8: the 10% to 90% band), each in (0, 1), sorted, unique."""
    try:
        values = tuple(float(level) for level in levels)
    except (TypeError, ValueError):
        raise ConfigError(f"{field}={levels!r} is not a list of numbers. Fix: {field}=[0.8,0.95]") from None
    if not values or any(not 0 < v < 1 for v in values) or list(values) != sorted(set(values)):
        raise ConfigError(f"{field}={list(values)}: central interval levels must be increasing, unique and strictly "
                          f"between 0 and 1 (0.8 = the 10%-90% band). Fix: {field}=[0.8,0.95]")
    return values


def level_name(level: float) -> str:
    """0.8 -> '80', 0.975 -> '97.5': the level in percent, as it appears in metric and column names."""
    return f"{round(100 * level, 6):g}"


def central_intervals(quantiles: Sequence[float]) -> list[tuple[float, int, int]]:
    """(level, lower index, upper index) of each central interval the quantiles hold: tau paired with 1 - tau."""
    pairs = []
    for low, tau in enumerate(quantiles):
        high = next((j for j, other in enumerate(quantiles) if math.isclose(other, 1 - tau)), None)
        if tau < 0.5 and high is not None:
            pairs.append((round(1 - 2 * tau, 10), low, high))
    return sorted(pairs)


def central_bands(quantiles: Sequence[float], forecast: Tensor) -> dict[float, tuple[Tensor, Tensor]]:
    """{level: (lower, upper)} of each central interval in quantile forecasts (..., Q)."""
    return {level: (forecast[..., low], forecast[..., high]) for level, low, high in central_intervals(quantiles)}


def conformal_radius(errors: Tensor, level: float) -> Tensor:
    """Split-conformal half-width per step ahead from calibration errors (N, H) -> (H,).

    The ceil((N + 1) * level)-th smallest absolute error of each step: for exchangeable errors the interval
    `point -/+ radius` then covers a new value with probability >= level (and < level + 1 / (N + 1) without ties).
    Infinite when N is too small for the level (N < level / (1 - level)).
    """
    n = errors.shape[0]
    rank = math.ceil((n + 1) * level)
    if rank > n:
        return torch.full(errors.shape[1:], math.inf, dtype=errors.dtype, device=errors.device)
    return errors.abs().sort(dim=0).values[rank - 1]


def conformal_forecast(point: Tensor, errors: Tensor, levels: Sequence[float], groups: Tensor | None = None,
                       error_groups: Tensor | None = None) -> tuple[tuple[float, ...], Tensor]:
    """Point forecasts (B, H) and calibration errors (N, H) -> (quantile levels, quantile forecasts (B, H, Q)).

    Each central level L gives the quantiles (1 - L) / 2 and (1 + L) / 2 as point -/+ its radius, and the point
    forecast is the median; ordered along Q, since a higher level's radius is a higher order statistic. With
    `groups` (B,) and `error_groups` (N,), e.g. tickers of different price scales, each group is calibrated on its
    own errors. Levels that need more calibration windows than a group has (infinite radius) are left out:
    compare the returned levels.
    """
    groups = torch.zeros(len(point), dtype=torch.long, device=point.device) if groups is None else groups
    error_groups = torch.zeros(len(errors), dtype=torch.long, device=errors.device) if error_groups is None \
        else error_groups
    n_groups = int(max(groups.max(), error_groups.max())) + 1 if len(point) and len(errors) else 1
    radius = {}
    for level in sorted(levels):  # (groups, H) -> each window's group's radius (B, H)
        per_group = torch.stack([conformal_radius(errors[error_groups == g], level) for g in range(n_groups)])
        radius[level] = per_group.to(point.device)[groups]
    kept = [level for level, r in radius.items() if bool(torch.isfinite(r).all())]
    quantiles = (*((1 - level) / 2 for level in reversed(kept)), 0.5, *((1 + level) / 2 for level in kept))
    columns = [point - radius[level] for level in reversed(kept)] + [point] + [point + radius[level] for level in kept]
    return tuple(round(q, 10) for q in quantiles), torch.stack(columns, dim=-1)


def pinball_loss(forecast: Tensor, actual: Tensor, quantiles: Sequence[float]) -> Tensor:
    """Mean pinball (quantile) loss over samples, steps and levels: forecast (B, H, Q), actual (B, H).

    rho_tau(u) = max(tau * u, (tau - 1) * u) with u = actual - quantile; its minimiser is the tau-quantile, so a
    quantile head trained on it learns the conditional quantiles.
    """
    tau = torch.as_tensor(quantiles, dtype=forecast.dtype, device=forecast.device)
    error = actual.unsqueeze(-1) - forecast
    return torch.maximum(tau * error, (tau - 1) * error).mean()


def crps_from_quantiles(forecast: Tensor, actual: Tensor, quantiles: Sequence[float]) -> Tensor:
    """CRPS approximated from ordered quantiles (B, H, Q), averaged over samples and steps.

    CRPS = 2 * integral over tau in (0, 1) of rho_tau(y - q(tau)). With q(tau) held at each quantile over its cell
    of tau (the cells split (0, 1) at the midpoints between levels), the integral is exact cell by cell: the CRPS of
    the discrete distribution that puts the mass of each cell on its quantile. Coarse with 3 quantiles, but a
    proper score, equal to E|X - y| - E|X - X'| / 2 of that distribution.
    """
    tau = torch.as_tensor(quantiles, dtype=forecast.dtype, device=forecast.device)
    edges = torch.cat([tau.new_zeros(1), (tau[1:] + tau[:-1]) / 2, tau.new_ones(1)])
    mass, middle = edges[1:] - edges[:-1], (edges[1:] + edges[:-1]) / 2
    error = actual.unsqueeze(-1) - forecast
    return 2 * (mass * torch.maximum(middle * error, (middle - 1) * error)).sum(-1).mean()


def interval_metrics(forecast: Tensor, actual: Tensor, quantiles: Sequence[float]) -> dict[str, float]:
    """coverage_<L> and width_<L> of each central interval, pinball and crps, in float64: (B, H, Q) vs (B, H)."""
    forecast, actual = forecast.double(), actual.double()
    metrics = {}
    for level, low, high in central_intervals(quantiles):
        lower, upper = forecast[..., low], forecast[..., high]
        metrics[f"coverage_{level_name(level)}"] = ((lower <= actual) & (actual <= upper)).double().mean().item()
        metrics[f"width_{level_name(level)}"] = (upper - lower).mean().item()
    metrics["pinball"] = pinball_loss(forecast, actual, quantiles).item()
    metrics["crps"] = crps_from_quantiles(forecast, actual, quantiles).item()
    return metrics


NO_INTERVALS = "none: conformal intervals need a validation set (data.val_fraction > 0); or train with model.quantiles"


def forecast_intervals(point: Tensor, quantile_forecast: tuple[tuple[float, ...], Tensor] | None,
                       errors: Tensor | None, levels: Sequence[float], groups: Tensor | None = None,
                       error_groups: Tensor | None = None) -> tuple[tuple[float, ...], Tensor, str] | None:
    """A model's quantile forecasts in prices: (quantile levels, (B, H, Q), how they were made).

    A quantile head's own `quantile_forecast` (levels, prices) when it has one, else split-conformal intervals at
    the central `levels` around `point` (B, H) from calibration `errors` (N, H), per ticker (`groups`,
    `error_groups`); None when neither exists.
    """
    if quantile_forecast is not None:
        return (*quantile_forecast, f"quantile head {list(quantile_forecast[0])}")
    if errors is None:
        return None
    quantiles, forecast = conformal_forecast(point, errors, levels, groups, error_groups)
    kept = {level for level, _, _ in central_intervals(quantiles)}
    dropped = [level_name(level) for level in levels if not any(math.isclose(level, k) for k in kept)]
    if dropped:
        warnings.warn(f"no {', '.join(dropped)}% conformal interval: {len(errors)} calibration windows are too few "
                      "for it (a level L needs L / (1 - L) of them).", stacklevel=2)
    return quantiles, forecast, f"split-conformal from {len(errors)} validation windows"


def interval_report(pred: Tensor, persistence: Tensor, actual: Tensor, ticker: Tensor,
                    quantile_forecast: tuple[tuple[float, ...], Tensor] | None,
                    calibration: tuple[Tensor, Tensor, Tensor] | None,
                    levels: Sequence[float]) -> tuple[dict[str, float], dict[float, tuple[Tensor, Tensor]], str]:
    """The test period's interval scores of a model and of persistence (split-conformal at the model's levels).

    pred, persistence, actual (B, H) in prices, ticker (B,); `calibration` the validation errors (N, H) of the
    model and of persistence and their tickers (N,): each ticker is calibrated on its own windows. Returns the
    metrics over all windows (coverage_<L>, width_<L>, pinball, crps, and the same with persistence_), the
    model's bands {level: (lower, upper)} and how its intervals were made.
    """
    model_errors, persistence_errors, error_tickers = calibration or (None, None, None)
    found = forecast_intervals(pred.double(), quantile_forecast, model_errors, levels, ticker, error_tickers)
    if found is None:
        return {}, {}, NO_INTERVALS
    quantiles, forecast, method = found
    bands = central_bands(quantiles, forecast)
    metrics = interval_metrics(forecast, actual, quantiles)
    if persistence_errors is not None:
        p_quantiles, p_forecast = conformal_forecast(persistence.double(), persistence_errors, list(bands), ticker,
                                                     error_tickers)
        metrics.update({f"persistence_{k}": v for k, v in interval_metrics(p_forecast, actual, p_quantiles).items()})
    return metrics, bands, method
