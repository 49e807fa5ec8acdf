"""A test run's predictions frame (predictions.csv's rows), made from what the model's test loop collected.

The model collects (`Forecaster.test_forecasts`); this module lays the forecasts out by date and ticker with the
model's prediction intervals; `lstm_zoo.evaluation.metrics.score` scores the frame. Interval scores (coverage,
width, pinball, CRPS) come from the quantile forecasts themselves: the frame keeps only the central bands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from torch import Tensor

from lstm_zoo.evaluation.intervals import interval_report, level_name
from lstm_zoo.evaluation.metrics import persistence_forecast


@dataclass
class TestForecasts:
    """A test period's forecasts in prices, one row per window: point forecasts, actual prices (B, H), last known
    prices and ticker indices (B,); a quantile head's (levels, quantile forecasts (B, H, Q)); the validation
    errors of the model and of persistence with their tickers (split-conformal calibration); the interval levels."""

    pred: Tensor
    actual: Tensor
    last: Tensor
    ticker: Tensor
    quantiles: tuple[tuple[float, ...], Tensor] | None
    calibration: tuple[Tensor, Tensor, Tensor] | None
    interval_levels: Sequence[float]


def predictions_frame(forecasts: TestForecasts, dates: pd.DatetimeIndex,
                      tickers: Sequence[str]) -> tuple[pd.DataFrame, dict[str, float], str]:
    """The predictions frame, the interval scores and how the intervals were made.

    One row per test window: its first target date (`dates`, the data module's test dates), ticker (names of the
    indices), the actual value(s), the model's and persistence's, and the model's interval bounds (lower_<L>,
    upper_<L>, and lower_<L>_t+k ... when horizon > 1). Interval scores: coverage_<L>, width_<L>, pinball, crps of
    the model and (persistence_*) of split-conformal persistence.
    """
    actual, last, ticker = forecasts.actual.cpu(), forecasts.last.cpu(), forecasts.ticker.cpu()
    pred = forecasts.pred.cpu()
    persistence = persistence_forecast(last, actual.shape[1])
    quantiles = (forecasts.quantiles[0], forecasts.quantiles[1].cpu()) if forecasts.quantiles else None
    calibration = tuple(t.cpu() for t in forecasts.calibration) if forecasts.calibration else None
    intervals, bands, method = interval_report(pred, persistence, actual, ticker, quantiles, calibration,
                                               forecasts.interval_levels)
    actual, pred = actual.numpy(), pred.numpy()
    frame = pd.DataFrame({"date": dates[: len(actual)].date, "ticker": [tickers[i] for i in ticker.tolist()],
                          "actual": actual[:, 0], "predicted": pred[:, 0], "persistence": last.numpy()})
    for step in range(1, actual.shape[1]):
        frame[f"actual_t+{step + 1}"] = actual[:, step]
        frame[f"predicted_t+{step + 1}"] = pred[:, step]
    for level, bounds in sorted(bands.items()):
        for name, bound in zip(("lower", "upper"), bounds):
            bound = bound.numpy()
            for step in range(actual.shape[1]):
                frame[f"{name}_{level_name(level)}" + (f"_t+{step + 1}" if step else "")] = bound[:, step]
    return frame, intervals, method
