"""Forecasts past the end of the data (predict.py): the future trading days, the forecast table and its plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import Tensor

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lstm_zoo.build import route_lightning_logs_to_hydra  # noqa: E402
from lstm_zoo.checkpoints import data_for_checkpoint, load_forecaster  # noqa: E402
from lstm_zoo.data import DataError  # noqa: E402
from lstm_zoo.errors import ConfigError  # noqa: E402
from lstm_zoo.evaluation.intervals import (  # noqa: E402
    NO_INTERVALS,
    central_bands,
    forecast_intervals,
    level_name,
)


def future_dates(last: pd.Timestamp, horizon: int, calendar: str | None) -> tuple[pd.DatetimeIndex, str]:
    """The `horizon` trading days after `last`, and a note saying how they were found.

    `calendar` is an exchange_calendars code (XNYS: New York Stock Exchange, XLON, XTKS, ...): its sessions, with
    the exchange's holidays. None: the next weekdays, holidays not known (a forecast dated on a holiday is the next
    session's).
    """
    last = pd.Timestamp(last).normalize()
    if calendar is None:
        return pd.bdate_range(last + pd.Timedelta(days=1), periods=horizon), "weekdays (holidays not known)"
    import exchange_calendars

    try:
        exchange = exchange_calendars.get_calendar(str(calendar), start=last - pd.Timedelta(days=7))
    except exchange_calendars.errors.InvalidCalendarName:
        raise ConfigError(f"calendar={calendar!r} is not an exchange calendar. Fix: an exchange_calendars code such "
                          "as calendar=XNYS (New York), XLON, XTKS, or calendar=null for weekdays (holidays not "
                          "known).") from None
    sessions = exchange.sessions[exchange.sessions > last][:horizon]
    if len(sessions) < horizon:
        raise ConfigError(f"calendar={calendar}: its sessions end on {exchange.last_session.date()}, before "
                          f"{horizon} trading days after {last.date()}. Fix: calendar=null (weekdays).")
    return pd.DatetimeIndex(sessions), f"{calendar} trading sessions"


def forecast_frame(ticker: str, dates: pd.DatetimeIndex, point: Tensor, bands: dict[float, tuple[Tensor, Tensor]],
                   persistence: float) -> pd.DataFrame:
    """One ticker's rows, one per step ahead: date, ticker, step, forecast, lower/upper_<L> per level, persistence."""
    frame = pd.DataFrame({"date": dates.date, "ticker": ticker, "step": range(1, len(dates) + 1),
                          "forecast": point.tolist()})
    for level, (lower, upper) in sorted(bands.items()):
        frame[f"lower_{level_name(level)}"] = lower.tolist()
        frame[f"upper_{level_name(level)}"] = upper.tolist()
    frame["persistence"] = persistence
    return frame


def plot_forecast(histories: dict[str, pd.Series], frame: pd.DataFrame, path: Path, title: str,
                  days: int = 60) -> None:
    """One panel per ticker: the last `days` of the target, then the forecast with its bands (the widest lightest)
    and persistence."""
    fig, axes = plt.subplots(len(histories), 1, figsize=(11, 4.5 * len(histories)), squeeze=False)
    for ax, (ticker, history) in zip(axes[:, 0], histories.items()):
        recent, rows = history.iloc[-days:], frame[frame["ticker"] == ticker]
        dates = pd.to_datetime(rows["date"])
        ax.plot(recent.index, recent.to_numpy(), color="red", label=f"{history.name} (data)")
        levels = sorted((c.removeprefix("lower_") for c in rows.columns if c.startswith("lower_")), key=float)
        for k, level in enumerate(reversed(levels)):
            ax.fill_between(dates, rows[f"lower_{level}"], rows[f"upper_{level}"], color="tab:blue",
                            alpha=0.15 + 0.2 * k, linewidth=0, label=f"{level}% interval")
        # the forecast line starts at the last known price, so it reads as a continuation of the data
        ax.plot([recent.index[-1], *dates], [recent.iloc[-1], *rows["forecast"]], color="blue", marker=".",
                label="forecast")
        ax.plot(dates, rows["persistence"], color="gray", linestyle="--", label="persistence (last value)")
        name = f" {ticker}" if len(histories) > 1 else ""
        ax.set(title=f"{title}{name}", xlabel="Date", ylabel=str(history.name))
        ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def predict(cfg: DictConfig) -> pd.DataFrame:
    """Forecast the `horizon` trading days after the last row of `cfg.data` with a trained model, with intervals,
    one forecast per ticker; writes forecast.csv and forecast.png into the output folder and prints the table."""
    route_lightning_logs_to_hydra()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, data_state = load_forecaster(cfg.ckpt_path, interval_levels=list(cfg.interval_levels))
    datamodule = data_for_checkpoint(cfg.data, data_state, str(cfg.ckpt_path))
    x, tickers, histories = datamodule.latest_windows()  # (T, W, F), (T,), {ticker: target history}
    last = torch.tensor([float(h.iloc[-1]) for h in histories.values()], dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        forecast = model.to_forecast(model.forward_batch(x, tickers, datamodule.tickers))
        point, quantiles = model.prices(forecast, last, tickers, datamodule.to_price)
        try:  # split-conformal needs the validation windows of the training split
            datamodule.setup("predict")
            calibration = model.validation_errors(datamodule)
            reason = datamodule.calibration_note if calibration is None and datamodule.calibration_note \
                else NO_INTERVALS
        except DataError as err:
            calibration, reason = None, f"none: no validation windows for conformal intervals ({err})"
    errors, error_tickers = (calibration[0], calibration[2]) if calibration else (None, None)
    found = forecast_intervals(point, (model.quantiles, quantiles) if model.quantiles else None, errors,
                               model.interval_levels, tickers, error_tickers)
    frames, calendars = [], set()
    for i, (ticker, history) in enumerate(histories.items()):
        dates, calendar = future_dates(history.index[-1], datamodule.horizon, cfg.calendar)
        calendars.add(calendar)
        bands = central_bands(found[0], found[1][i]) if found else {}  # this ticker's (H,) bounds per level
        frames.append(forecast_frame(ticker, dates, point[i], bands, float(history.iloc[-1])))
    frame = pd.concat(frames, ignore_index=True)
    frame.to_csv(out / "forecast.csv", index=False)
    ends = sorted({str(h.index[-1].date()) for h in histories.values()})
    title = f"{datamodule.target}, the {datamodule.horizon} {', '.join(sorted(calendars))} after {', '.join(ends)}"
    plot_forecast(histories, frame, out / "forecast.png", f"{type(model).__name__}: {title}")
    print(f"\n{type(model).__name__} ({cfg.ckpt_path}) on {datamodule.source}: {title}\n"
          + frame.to_string(index=False, float_format="%.3f")
          + f"\nIntervals: {found[2] if found else reason}. Written to {out}/forecast.csv and forecast.png.")
    return frame
