"""Pooling out-of-sample forecasts over folds and tickers, with a scale-free loss for comparisons across tickers.

A predictions frame is a run's predictions.csv (date, ticker, actual, predicted, persistence, and actual_t+k /
predicted_t+k for horizon > 1), plus a `fold` column once the folds of a configuration are pooled.

Prices differ more than tenfold across tickers (GOOG against MSFT), so squared dollar errors pooled over tickers
would rank forecasts on the dearest stock alone. Pooled statistics therefore use the **relative squared error**:
a forecast origin's squared error (mean over its steps) divided by persistence's mean squared error on the same
ticker and fold. Its mean is the forecast's MSE relative to persistence there (1 for persistence itself, Theil's U
squared), and within one ticker and fold it is the squared error times a constant, so rankings and
Diebold-Mariano tests there are unchanged. Normalising per fold as well keeps a stock whose price grew tenfold over
the years (AAPL) from being weighed by its last years alone. The loss of a day is the mean over the tickers
forecast that day: that daily series is what the pooled Diebold-Mariano test, the MCS and the SPA test see, so
same-day losses of different tickers (one market) stay together in the block bootstrap. The pooled DM test uses a
Newey-West long-run variance (`pooled_dm`): a single split's stays R's dm.test.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lstm_zoo.evaluation.metrics import (
    METRICS,
    diebold_mariano,
    diebold_mariano_hac,
    forecast_arrays,
    score,
    step_columns,
)


def squared_errors(frame: pd.DataFrame, forecast: str = "predicted") -> np.ndarray:
    """Per forecast origin, the mean over its steps of the squared error of `forecast` (predicted or persistence)."""
    actual = frame[step_columns(frame, "actual")].to_numpy(dtype=float)  # (T, H)
    if forecast == "persistence":  # the last known value, repeated for every step ahead
        pred = frame[["persistence"]].to_numpy(dtype=float)
    else:
        pred = frame[step_columns(frame, forecast)].to_numpy(dtype=float)
    return ((pred - actual) ** 2).mean(axis=1)


def relative_losses(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` plus `loss` and `persistence_loss`: squared errors over persistence's MSE on the ticker (and fold)."""
    keys = [frame[k].to_numpy() for k in ("ticker", "fold") if k in frame]
    model, base = squared_errors(frame, "predicted"), squared_errors(frame, "persistence")
    scale = pd.Series(base).groupby(keys).transform("mean").to_numpy()
    if (scale <= 0).any():
        where = frame.loc[scale <= 0, [k for k in ("ticker", "fold") if k in frame]].drop_duplicates()
        raise ValueError(f"persistence is exact on every test day of {where.to_dict('records')} (the price never "
                         "moves), so errors relative to it are undefined. Fix: leave that series out.")
    return frame.assign(loss=model / scale, persistence_loss=base / scale)


def daily_losses(frame: pd.DataFrame) -> pd.DataFrame:
    """Per date, the mean over tickers of the relative losses of the forecast and of persistence."""
    losses = relative_losses(frame)
    return losses.groupby(pd.to_datetime(losses["date"]))[["loss", "persistence_loss"]].mean()


def pooled_dm(loss: np.ndarray, persistence_loss: np.ndarray, horizon: int, single_split: bool) -> tuple[float, float]:
    """Diebold-Mariano test of a per-day loss series against persistence's on the same days.

    A single split (one ticker, one fold) gets R's forecast::dm.test (`diebold_mariano`), as a run's own
    test/dm_* do; a series pooled over tickers or folds gets the Newey-West version (`diebold_mariano_hac`), since
    its daily loss differential is serially correlated beyond lag h - 1.
    """
    loss, persistence_loss = np.asarray(loss, dtype=float), np.asarray(persistence_loss, dtype=float)
    if not single_split:
        return diebold_mariano_hac(loss, persistence_loss, horizon)
    # diebold_mariano takes errors and squares them: the square roots of the daily losses
    return diebold_mariano(np.sqrt(loss)[:, None], np.sqrt(persistence_loss)[:, None], horizon)


def is_single_split(frame: pd.DataFrame) -> bool:
    """Forecasts of one ticker in one fold (test period)."""
    return frame["ticker"].nunique() == 1 and ("fold" not in frame or frame["fold"].nunique() == 1)


def pooled_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """Scale-free metrics of a predictions frame pooled over its tickers (and folds), against persistence.

    rel_mse: the mean daily relative loss over persistence's (< 1: better than persistence); skill = 1 -
    sqrt(rel_mse), which for a single ticker and fold is the usual 1 - RMSE / persistence RMSE; Diebold-Mariano on
    the daily loss series (`pooled_dm`); and the scale-free metrics of `METRICS` (MAPE, directional accuracy) over
    every forecast.
    """
    daily = daily_losses(frame)
    rel_mse = float(daily["loss"].mean() / daily["persistence_loss"].mean())
    horizon = len(step_columns(frame, "actual"))
    statistic, pvalue = pooled_dm(daily["loss"], daily["persistence_loss"], horizon, is_single_split(frame))
    pred, actual, last = forecast_arrays(frame)
    persistence = np.broadcast_to(last[:, None], actual.shape)
    metrics = {"rel_mse": rel_mse, "skill": 1 - math.sqrt(rel_mse)}
    for m in (m for m in METRICS if m.pooled):
        metrics[m.name] = m.fn(pred, actual, last)
        if m.persistence:
            metrics[f"persistence_{m.name}"] = m.fn(persistence, actual, last)
    return {**metrics, "dm_stat": statistic, "dm_pvalue": pvalue, "days": float(len(daily)),
            "tickers": float(frame["ticker"].nunique())}


def ticker_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """test/<ticker>/* (each ticker's metrics in its price units) and test/pooled/* (scale-free, over all tickers)."""
    metrics = {}
    for ticker, part in frame.groupby("ticker", sort=False):
        metrics.update({f"test/{ticker}/{k}": v for k, v in score(part).items()})
    metrics.update({f"test/pooled/{k}": v for k, v in pooled_metrics(frame).items()})
    return metrics


def seed_mean_losses(per_seed: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Per (ticker, date): fold, squared errors in price units and relative losses, each averaged over the seeds."""
    frames = []
    for frame in per_seed.values():
        losses = relative_losses(frame)
        frames.append(losses.assign(error=squared_errors(frame, "predicted"),
                                    persistence_error=squared_errors(frame, "persistence"))
                      [["ticker", "date", "fold", "actual", "error", "persistence_error", "loss", "persistence_loss"]])
    return pd.concat(frames).groupby(["ticker", "date"]).mean()


def pool_folds(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The forecasts of several runs (folds, or tickers of per-ticker models) as one series, sorted by ticker and
    date; a (ticker, date) forecast by two of them is an error: every test day belongs to exactly one fold."""
    pooled = pd.concat(frames, ignore_index=True)
    twice = pooled.duplicated(["ticker", "date"], keep=False)
    if twice.any():
        shown = pooled.loc[twice, ["ticker", "date"]].drop_duplicates().head(3).to_dict("records")
        raise ValueError(f"{int(twice.sum())} forecasts share a ticker and date across the pooled runs (e.g. {shown}):"
                         " their test periods overlap. Fix: pool runs of distinct folds (backtest.fold) or tickers.")
    return pooled.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)
