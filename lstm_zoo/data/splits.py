"""Train and test date ranges (pure, tiny, heavily tested)."""

from __future__ import annotations

import pandas as pd

from lstm_zoo.data.sources import DataError


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
