"""Train and test date ranges: one split, or rolling-origin (walk-forward) folds with a purge gap (pure pandas).

Everything works on a trading calendar, the sorted union of the dates of every series of a run, so all
tickers of a global model share one set of fold boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lstm_zoo.data.sources import DataError


@dataclass(frozen=True)
class Period:
    """The date ranges of one run: training rows in [train_start, train_end], test rows in [test_start, test_end].

    `train_start`/`test_end` None: from the first row / to the last row. Rows strictly between train_end and
    test_start are the gap: no training or validation target lies there, but test windows still read them as
    inputs (they are known by the first test day), so each test window ends on the trading day right before its
    first target day.
    """

    train_start: pd.Timestamp | None
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp | None = None
    label: str = "single split"

    def rows(self, frame: pd.DataFrame, window: int, horizon: int, where: str, fix: str
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """A ticker's training rows, and the rows its test windows read: `window` days before the first test day
        (the trading days right before it, gap days included), the test days, and up to horizon - 1 days after."""
        dates = frame.index
        in_train = dates <= self.train_end
        if self.train_start is not None:
            in_train &= dates >= self.train_start
        train = frame[in_train]  # targets stop at train_end: before the gap and the test period
        first = int(dates.searchsorted(self.test_start))
        stop = int(dates.searchsorted(self.test_end, side="right")) if self.test_end is not None else len(dates)
        history = frame.iloc[max(first - window, 0) : stop + horizon - 1]
        need = window + horizon
        if len(train) < need:
            raise DataError(f"{where}: the training period has {len(train)} usable rows but window + horizon = "
                            f"{need} are needed. {fix}")
        if stop <= first or len(history) < need:
            raise DataError(f"{where}: the test period has {max(stop - first, 0)} rows ({len(history)} with the "
                            f"window before it) but window + horizon = {need} are needed. {fix}")
        return train, history


def split_dates(index: pd.DatetimeIndex, train_end: str | None, test_start: str | None,
                source: str = "data") -> tuple[pd.Timestamp, pd.Timestamp]:
    """(train_end, test_start) inside `index`; by default the test period is the last calendar year in the data."""
    first, last = index[0], index[-1]
    test_start = pd.Timestamp(test_start) if test_start else pd.Timestamp(year=last.year, month=1, day=1)
    train_end = pd.Timestamp(train_end) if train_end else test_start - pd.Timedelta(days=1)
    span = f"{source} covers {first.date()} to {last.date()}"
    if train_end >= test_start:
        raise DataError(f"data.train_end={train_end.date()} must be before data.test_start={test_start.date()}. "
                        f"Fix: dates inside the data ({span}), training first.")
    if test_start > last:
        raise DataError(f"data.test_start={test_start.date()} is after the last row: {span}. "
                        "Fix: an earlier data.test_start.")
    if train_end < first:
        raise DataError(f"data.train_end={train_end.date()} is before the first row: {span}. "
                        "Fix: a later data.train_end.")
    return train_end, test_start


def single_split(calendar: pd.DatetimeIndex, train_end: str | None, test_start: str | None,
                 source: str = "data") -> Period:
    """The one split of `data.train_end` / `data.test_start`: training from the first row, test to the last."""
    end, start = split_dates(calendar, train_end, test_start, source)
    return Period(None, end, start)


def validation_size(n_train: int, val_fraction: float, where: str) -> int:
    """How many of a ticker's `n_train` training windows validate: its chronologically last `val_fraction` of them,
    at least one (none when val_fraction is 0) and never all."""
    needed = 2 if val_fraction > 0 else 1
    if n_train < needed:
        raise DataError(f"{where}: the training period gives {n_train} window(s); at least {needed} are "
                        f"needed (one to train{', one to validate' if needed == 2 else ''}). Fix: a smaller "
                        "data.window or more data.")
    return min(max(round(n_train * val_fraction), 1), n_train - 1) if val_fraction > 0 else 0


def untrained_windows(windows: pd.DataFrame, trained_until: dict[str, str], source: str
                      ) -> tuple[np.ndarray, str | None]:
    """Which validation `windows` (ticker, date) come after the checkpoint's last training window of the same ticker
    (after its last one of any ticker for a series it did not train on): the model never trained on those, so
    conformal calibration may use them. Returns the mask and, when it drops any, a note saying why."""
    latest = max(pd.Timestamp(d) for d in trained_until.values()) if trained_until else None
    if latest is None:
        return np.ones(len(windows), dtype=bool), None
    after = windows["ticker"].map(lambda t: pd.Timestamp(trained_until.get(t, latest)))
    keep = (windows["date"] > after).to_numpy()
    if keep.all():
        return keep, None
    if keep.any():
        return keep, f"{int(keep.sum())} of {len(windows)} validation windows: the model trained on the others"
    return keep, (f"none: the model trained on all {len(windows)} validation windows of {source} (its training "
                  f"windows run to {max(trained_until.values())}), and conformal intervals need windows it never saw. "
                  "Fix: train with data.val_fraction > 0 (and keep the checkpoint's split), or with model.quantiles")


@dataclass(frozen=True)
class WalkForward:
    """Rolling-origin folds (`backtest=walk_forward`): `n_folds` consecutive test periods ending at `end`.

    Fold k's test period is the k-th of `n_folds` back-to-back blocks of `test_years` calendar years, Jan 1 to
    Dec 31 (the last block holds `end`, default the last row, and stops there: part of a year if `end` is not
    the year's last trading day), or of `test_days` trading days when set (the last block ends at `end`). Its
    training period ends `gap_days` trading days before the first test day (the purge) and starts at the first
    row (expanding window, `train_years: null`) or, sliding, on Jan 1 `train_years` years before the test year
    (`test_days`: `train_years` years before the training period's end).
    A run is one fold (`fold`), so a sweep over `backtest.fold` distributes the folds like any other jobs.

    `refit_every` r > 1 refits the model only every r folds (darts' `retrain`, NeuralForecast's `refit`): fold k
    trains on the training period of fold r * (k // r), its refit fold, and forecasts its own test period, reading
    the days in between as known inputs. Training, validation split and scaling are the refit fold's, so fold k's
    model is the refit fold's model (`lstm_zoo.refit` reuses that job's checkpoint when it has finished).
    """

    fold: int = 0
    n_folds: int = 8
    test_years: int = 1
    test_days: int | None = None
    train_years: int | None = None
    gap_days: int = 0
    end: str | None = None
    refit_every: int = 1

    def __post_init__(self) -> None:
        def integer(name: str, low: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataError(f"backtest.{name}={value!r} is out of range: it must be an integer >= {low}"
                                f"{' (or null)' if optional else ''}.")

        integer("n_folds", 1)
        integer("test_years", 1)
        integer("test_days", 1, optional=True)
        integer("train_years", 1, optional=True)
        integer("gap_days", 0)
        integer("refit_every", 1)
        if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not 0 <= self.fold < self.n_folds:
            raise DataError(f"backtest.fold={self.fold!r} is out of range: with backtest.n_folds={self.n_folds} it "
                            f"must be an integer in 0..{self.n_folds - 1}. Fix: 'backtest.fold=range("
                            f"{self.n_folds})' in a multirun, or a larger backtest.n_folds.")

    def folds(self, calendar: pd.DatetimeIndex, source: str = "data") -> list[Period]:
        """Every fold's Period on `calendar` (sorted unique trading days); DataError if they do not fit the data."""
        first, last = calendar[0], calendar[-1]
        span = f"{source} covers {first.date()} to {last.date()}"
        end = pd.Timestamp(self.end) if self.end is not None else last
        if not first <= end <= last:
            raise DataError(f"backtest.end={end.date()} is outside the data: {span}. Fix: backtest.end=null (the "
                            "last row) or a date inside the data.")
        n_end = int(calendar.searchsorted(end, side="right"))  # calendar[:n_end]: the days up to `end`
        if self.test_days is not None:  # fold k tests calendar[starts[k] : starts[k + 1]]
            starts = [n_end - (self.n_folds - k) * self.test_days for k in range(self.n_folds + 1)]
            length, fit = f"backtest.test_days={self.test_days}", (n_end - 1) // self.test_days
        else:  # fold k tests the calendar years from Jan 1 of years[k]; the last fold's hold `end` and stop there
            years = [end.year + 1 - (self.n_folds - k) * self.test_years for k in range(self.n_folds)]
            starts = [int(calendar.searchsorted(pd.Timestamp(year, 1, 1))) for year in years] + [n_end]
            length, fit = f"backtest.test_years={self.test_years}", 0
            while pd.Timestamp(end.year + 1 - (fit + 1) * self.test_years, 1, 1) > first:
                fit += 1
        if starts[0] < 1:
            raise DataError(f"backtest.n_folds={self.n_folds} test periods of {length} ending {end.date()} run past "
                            f"the data ({span}): no training day is left before the first fold. Fix: "
                            f"backtest.n_folds={max(fit, 1)}, a shorter test length, or more data.")
        periods = []
        for k, (begin, stop) in enumerate(zip(starts[:-1], starts[1:])):
            if stop <= begin:
                raise DataError(f"backtest: fold {k}'s test period holds no trading day ({length} on {span}). "
                                "Fix: a longer test length or fewer backtest.n_folds.")
            if begin - self.gap_days < 1:
                raise DataError(f"backtest.gap_days={self.gap_days} is longer than fold {k}'s training period "
                                f"({begin} trading days, {first.date()} to {calendar[begin - 1].date()}). Fix: a "
                                "smaller backtest.gap_days or fewer backtest.n_folds.")
            train_end = calendar[begin - self.gap_days - 1]  # the last training target day, before the gap
            train_start = None  # expanding window: from the first row
            if self.train_years is not None and self.test_days is None:  # sliding: the calendar years before
                train_start = calendar[int(calendar.searchsorted(pd.Timestamp(years[k] - self.train_years, 1, 1)))]
            elif self.train_years is not None:  # sliding: the `train_years` years up to train_end
                since = train_end - pd.DateOffset(years=self.train_years)
                train_start = calendar[int(calendar.searchsorted(since, side="right"))]
            test_start, test_end = calendar[begin], calendar[stop - 1]
            periods.append(Period(train_start, train_end, test_start, test_end,
                                  f"fold {k} (test {test_start.date()} to {test_end.date()})"))
        return periods

    @property
    def refit_fold(self) -> int:
        """The fold whose training period this fold's model is fit on: the last refit at or before this fold."""
        return self.refit_every * (self.fold // self.refit_every)

    def period(self, calendar: pd.DatetimeIndex, source: str = "data") -> Period:
        """This run's fold: its test period, with the training period of its refit fold."""
        folds = self.folds(calendar, source)
        own, refit = folds[self.fold], folds[self.refit_fold]
        if refit is own:
            return own
        return Period(refit.train_start, refit.train_end, own.test_start, own.test_end,
                      f"{own.label}, the model of fold {self.refit_fold}'s training period")
