"""Stock price windows: load, clean, split by date, scale on the training period only, window as views."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import MinMaxScaler
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

log = logging.getLogger(__name__)

EMBEDDED = "bokeh_sampledata IBM (2000-03-01 to 2013-03-01)"
TICKER_COLUMNS = ("Name", "Ticker", "Symbol")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d*)?$")


TARGET_TRANSFORMS = ("level", "diff", "log_return")

# Derived features: name -> (raw columns it reads, formula on the cleaned frame). Only backward-looking
# operations (same-day values, shift(+1), diff), so a row never reads the day it helps to predict or later.
DERIVED: dict[str, tuple[tuple[str, ...], Callable[[pd.DataFrame], pd.Series]]] = {
    "range": (("High", "Low"), lambda f: f["High"] - f["Low"]),  # the day's trading range
    "gap": (("Open", "Close"), lambda f: f["Open"] - f["Close"].shift(1)),  # overnight gap from yesterday's close
    "log_volume": (("Volume",), lambda f: np.log1p(f["Volume"])),
    "return": (("Close",), lambda f: np.log(f["Close"]).diff()),  # daily log return of the close
}


class DataError(ValueError):
    """A problem with the input data or the data config, worded for the user."""


def add_derived_features(frame: pd.DataFrame, names: list[str], source: str = "data") -> pd.DataFrame:
    """`frame` plus the derived columns `names` (see DERIVED), without the leading row(s) a shift leaves empty."""
    if not names:
        return frame
    derived = pd.DataFrame({name: DERIVED[name][1](frame) for name in names}, index=frame.index)
    derived = derived.replace([np.inf, -np.inf], np.nan)
    lead = int(derived.notna().all(axis=1).to_numpy().argmax())  # rows before the first complete one
    bad = derived.iloc[lead:].isna().any()
    if bad.any() or derived.iloc[lead:].empty:
        raise DataError(f"{source}: derived feature(s) {list(bad[bad].index)} are undefined on some days (e.g. a "
                        "log of a zero or negative price). Fix: drop them from data.features.")
    return pd.concat([frame, derived], axis=1).iloc[lead:]


def load_embedded_ibm() -> pd.DataFrame:
    """Real daily IBM OHLCV shipped by the `bokeh_sampledata` package (no network needed)."""
    from bokeh_sampledata.stocks import IBM

    frame = pd.DataFrame(IBM).rename(columns=lambda c: "Adj Close" if c == "adj_close" else c.title())
    return frame


def read_price_csv(path: str | Path, sep: str = ",") -> pd.DataFrame:
    """Read a CSV as text columns, turning every way a file can be unreadable into a DataError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data.path: no such file: {path}. Fix: pass an existing CSV, e.g. data.path=/abs/IBM.csv")
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty. Fix: point data.path at a CSV with a header and rows.") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: not a readable text CSV ({type(err).__name__}). Fix: pass a CSV file.") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err}). Fix: check the file's permissions.") from None
    if frame.empty:
        raise DataError(f"{path}: has a header ({', '.join(map(str, frame.columns))}) but no data rows. "
                        "Fix: point data.path at a CSV with rows.")
    if frame.shape[1] == 1:
        only = str(frame.columns[0])
        hint = next((d for d in (";", "\t", "|") if d in only), None)
        if hint is not None:
            raise DataError(f"{path}: read as one column {only!r}; the file looks {hint!r}-separated. "
                            f"Fix: data.sep={hint!r}")
    return frame


def _to_numbers(column: pd.Series) -> tuple[pd.Series, int]:
    """Parse a text column as floats; '1,234.5' (thousands separators) counts as 1234.5, inf as missing."""
    text = column.astype("string").str.strip()
    has_thousands = text.str.match(_THOUSANDS).fillna(False).astype(bool)
    text = text.where(~has_thousands, text.str.replace(",", "", regex=False))
    numbers = pd.to_numeric(text, errors="coerce").astype(float)
    return numbers.replace([np.inf, -np.inf], np.nan), int(has_thousands.sum())


def clean_prices(frame: pd.DataFrame, columns: list[str], date_column: str = "Date", ticker: str | None = None,
                 source: str = "data") -> pd.DataFrame:
    """Date-indexed float frame of `columns`: bad rows dropped, dates sorted and unique, one warning for all of it."""
    missing = [c for c in [date_column, *columns] if c not in frame.columns]
    if missing:
        field = "data.date_column" if date_column in missing else "data.target / data.features"
        raise DataError(f"{source}: column(s) {missing} not found; the file has {list(map(str, frame.columns))}. "
                        f"Fix: set {field} to one of those.")
    frame = _select_ticker(frame, ticker, source)
    notes: list[str] = []
    dates = pd.to_datetime(frame[date_column], errors="coerce")
    values = {}
    for name in columns:
        numbers, n_thousands = _to_numbers(frame[name])
        values[name] = numbers.to_numpy()
        if n_thousands:
            notes.append(f"read {n_thousands} value(s) of {name} with thousands separators (e.g. '1,234.5' as 1234.5)")
    clean = pd.DataFrame(values, index=pd.DatetimeIndex(dates.to_numpy(), name="Date"))
    bad_date = clean.index.isna()
    bad_value = clean.isna().any(axis=1).to_numpy() & ~bad_date
    if bad_date.any():
        notes.append(f"dropped {int(bad_date.sum())} row(s) whose {date_column} does not parse "
                     f"(e.g. {frame[date_column][bad_date].astype(str).head(3).tolist()})")
    if bad_value.any():
        shown = [d.date().isoformat() for d in clean.index[bad_value][:5]]
        notes.append(f"dropped {int(bad_value.sum())} row(s) with empty, non-numeric or infinite values in "
                     f"{columns} on {shown}{' ...' if bad_value.sum() > 5 else ''}")
    clean = clean[~bad_date & ~bad_value]
    if not clean.index.is_monotonic_increasing:
        notes.append("sorted rows by date (the file was not in date order)")
        clean = clean.sort_index(kind="stable")
    duplicated = clean.index.duplicated(keep="last")
    if duplicated.any():
        shown = sorted({d.date().isoformat() for d in clean.index[duplicated]})[:5]
        notes.append(f"kept the last of {int(duplicated.sum())} duplicate date row(s) (dates {shown})")
        clean = clean[~duplicated]
    if clean.empty:
        raise DataError(f"{source}: no usable rows left for columns {columns} after dropping unparseable ones. "
                        "Fix: check data.date_column, data.target and data.features against the file.")
    if notes:
        warnings.warn(f"{source}: " + "; ".join(notes) + ".", stacklevel=2)
    return clean


def _select_ticker(frame: pd.DataFrame, ticker: str | None, source: str) -> pd.DataFrame:
    column = next((c for c in TICKER_COLUMNS if c in frame.columns), None)
    if column is None:
        if ticker is not None:
            raise DataError(f"{source}: data.ticker={ticker!r} was given but the file has no {TICKER_COLUMNS} column. "
                            "Fix: data.ticker=null")
        return frame
    names = sorted(frame[column].dropna().astype(str).str.strip().unique())
    if ticker is None:
        if len(names) > 1:
            raise DataError(f"{source}: column {column!r} holds {len(names)} tickers {names[:20]}. "
                            f"Fix: pick one with data.ticker=<name>, e.g. data.ticker={names[0]}")
        return frame
    if ticker not in names:
        raise DataError(f"{source}: data.ticker={ticker!r} not in column {column!r}; it holds {names[:20]}. "
                        f"Fix: data.ticker={names[0]}")
    return frame[frame[column].astype(str).str.strip() == ticker]


def make_windows(series: Tensor, target: Tensor, window: int, horizon: int) -> tuple[Tensor, Tensor]:
    """Sliding windows as views: x[i] = series[i : i+window], y[i] = target[i+window : i+window+horizon]."""
    n = series.shape[0] - window - horizon + 1
    x = series.unfold(0, window, 1)[:n].transpose(1, 2)  # (N, W, F), a view of `series`
    y = target[window:].unfold(0, horizon, 1)[:n]  # (N, H), a view of `target`
    return x, y


class WindowDataset(Dataset):
    """Windows held as tensor views; indexed with a whole batch of indices at once (no per-sample loop)."""

    def __init__(self, x: Tensor, y: Tensor, last: Tensor) -> None:
        self.x, self.y, self.last = x, y, last

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        return self.x[index], self.y[index], self.last[index]


class StockDataModule(L.LightningDataModule):
    """Daily price windows, `window` past days -> the next `horizon` values of `target`.

    Batches are `(x, y, last)`: x (B, window, features) is scaled with a MinMaxScaler fit on the training
    period only; `last` (B,) is the last known target price, in price units, so the persistence forecast
    and `to_price` need nothing else. y (B, horizon) depends on `target_transform`:
    `level` the MinMax-scaled target (the tutorial); `diff` the change target[t+k] - last and `log_return`
    log(target[t+k] / last), both divided by the standard deviation of the training period's one-day
    changes and never shifted, so a model output of 0 is exactly the persistence forecast.
    `features` may name derived columns (see DERIVED) besides the file's own.
    """

    def __init__(self, path: str | None = None, target: str = "High", features: list[str] | None = None,
                 window: int = 60, horizon: int = 1, train_end: str | None = None, test_start: str | None = None,
                 val_fraction: float = 0.1, batch_size: int = 32, date_column: str = "Date",
                 ticker: str | None = None, sep: str = ",",
                 target_transform: Literal["level", "diff", "log_return"] = "level") -> None:
        super().__init__()
        features = list(features) if features is not None else [target]
        for field, value, low in (("window", window, 1), ("horizon", horizon, 1), ("batch_size", batch_size, 1)):
            if int(value) < low:
                raise DataError(f"data.{field}={value} is out of range: it must be an integer >= {low}.")
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"data.val_fraction={val_fraction} is out of range: it must be in (0, 1).")
        if not features:
            raise DataError("data.features is empty: list at least one column, e.g. data.features=[High].")
        if target_transform not in TARGET_TRANSFORMS:
            raise DataError(f"data.target_transform={target_transform!r} is not one of {list(TARGET_TRANSFORMS)}.")
        self.path, self.target, self.features = path, target, features
        self.window, self.horizon, self.batch_size = int(window), int(horizon), int(batch_size)
        self.train_end, self.test_start, self.val_fraction = train_end, test_start, val_fraction
        self.date_column, self.ticker, self.sep = date_column, ticker, sep
        self.target_transform = target_transform
        self.columns = list(dict.fromkeys([*features, target]))  # scaled columns: features, then target
        self.target_index = self.columns.index(target)  # the target may also be one of the features
        self.derived = [c for c in self.columns if c in DERIVED]
        needed = [c for name in self.derived for c in DERIVED[name][0]]
        self.raw_columns = list(dict.fromkeys([c for c in self.columns if c not in DERIVED] + needed))
        self.scaler: MinMaxScaler | None = None
        self.change_scale: float | None = None  # std of the training period's one-day target changes
        self.datasets: dict[str, WindowDataset] = {}

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def source(self) -> str:
        return str(self.path) if self.path else EMBEDDED

    def load_frame(self) -> pd.DataFrame:
        if self.path:
            raw, date_column = read_price_csv(self.path, self.sep), self.date_column
        else:
            raw, date_column = load_embedded_ibm(), "Date"
        for name in self.derived:
            missing = [c for c in DERIVED[name][0] if c not in raw.columns]
            if missing:
                raise DataError(f"{self.source}: derived feature {name!r} in data.features needs column(s) {missing}, "
                                f"which the file lacks (it has {list(map(str, raw.columns))}). Fix: drop {name!r}.")
        unknown = [c for c in self.columns if c not in raw.columns and c not in DERIVED]
        if unknown:
            raise DataError(f"{self.source}: column(s) {unknown} not found; the file has {list(map(str, raw.columns))}"
                            f" and the derived features are {list(DERIVED)}. Fix: set data.target / data.features "
                            "to one of those.")
        frame = clean_prices(raw, self.raw_columns, date_column, self.ticker, self.source)
        return add_derived_features(frame, self.derived, self.source)[self.columns]

    def split_dates(self, index: pd.DatetimeIndex) -> tuple[pd.Timestamp, pd.Timestamp]:
        """(train_end, test_start); by default the test period is the last calendar year in the data."""
        first, last = index[0], index[-1]
        test_start = pd.Timestamp(self.test_start) if self.test_start else pd.Timestamp(year=last.year, month=1, day=1)
        train_end = pd.Timestamp(self.train_end) if self.train_end else test_start - pd.Timedelta(days=1)
        span = f"{self.source} covers {first.date()} to {last.date()}"
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

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        frame = self.load_frame()
        train_end, test_start = self.split_dates(frame.index)
        train, test = frame[frame.index <= train_end], frame[frame.index >= test_start]
        need = self.window + self.horizon
        for name, part in (("training", train), ("test", test)):
            have = len(part) + (self.window if name == "test" else 0)
            if have < need:
                raise DataError(f"{self.source}: the {name} period has {have} usable rows but window + horizon = "
                                f"{need} are needed. Fix: a smaller data.window/data.horizon or other split dates.")
        if self.scaler is None:
            constant = [c for c in self.columns if train[c].max() == train[c].min()]
            if constant:
                raise DataError(f"{self.source}: column(s) {constant} are constant over the training period, so "
                                "MinMax scaling is undefined and there is nothing to learn. Fix: choose other "
                                "data.features/data.target or a longer training period.")
            self.scaler = MinMaxScaler().fit(train[self.columns].to_numpy())  # train only: no test leakage
        if self.change_scale is None and self.target_transform != "level":
            self.change_scale = float(np.std(self._change(train[self.target].to_numpy()[1:],
                                                          train[self.target].to_numpy()[:-1])))
        history = pd.concat([train.iloc[-self.window:], test])  # test windows start with the last `window` days
        train_x, train_y, train_last, train_dates = self._windows(train)
        if len(train_x) < 2:
            raise DataError(f"{self.source}: the training period gives {len(train_x)} window(s); at least 2 are "
                            "needed (one to train, one to validate). Fix: a smaller data.window or more data.")
        n_val = min(max(round(len(train_x) * self.val_fraction), 1), len(train_x) - 1)
        cut = len(train_x) - n_val  # validation = the last windows of the training period, chronologically
        test_x, test_y, test_last, self.test_dates = self._windows(history)
        self.val_dates = train_dates[cut:]
        self.datasets = {
            "train": WindowDataset(train_x[:cut], train_y[:cut], train_last[:cut]),
            "val": WindowDataset(train_x[cut:], train_y[cut:], train_last[cut:]),
            "test": WindowDataset(test_x, test_y, test_last),
        }
        log.info("%s: %d train / %d val / %d test windows (train to %s, test from %s)", self.source, cut, n_val,
                 len(test_x), train_end.date(), test_start.date())

    def _change(self, future: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Target change from `last` to `future` in the transform's units (price or log-price difference)."""
        if self.target_transform == "log_return":
            if (future <= 0).any() or (last <= 0).any():
                raise DataError(f"{self.source}: data.target_transform=log_return needs positive {self.target} "
                                "values. Fix: data.target_transform=diff.")
            return np.log(future) - np.log(last)
        return future - last

    def _windows(self, part: pd.DataFrame) -> tuple[Tensor, Tensor, Tensor, pd.DatetimeIndex]:
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        scaled = torch.as_tensor(self.scaler.transform(part[self.columns].to_numpy()), dtype=torch.float32)
        scaled = scaled.to(device)  # whole series on the device once: no per-batch host-to-device copies
        prices = part[self.target].to_numpy()
        target = torch.tensor(prices, dtype=torch.float32, device=device)
        x, y = make_windows(scaled[:, : self.n_features], scaled[:, self.target_index], self.window, self.horizon)
        last = target[self.window - 1 : self.window - 1 + len(x)]
        if self.target_transform != "level":  # y[i, k] = change from the window's last day to its k+1-th target
            future = np.lib.stride_tricks.sliding_window_view(prices[self.window :], self.horizon)[: len(x)]
            change = self._change(future, prices[self.window - 1 : self.window - 1 + len(x), None])
            y = torch.tensor(change / self.change_scale, dtype=torch.float32, device=device)  # (N, H), float64 math
        return x, y, last, part.index[self.window : self.window + len(x)]

    def to_price(self, y: Tensor, last: Tensor) -> Tensor:
        """Model outputs (B, H) in scaled units -> prices (B, H); `last` (B,) anchors change-based targets."""
        if self.target_transform == "level":
            scale, offset = float(self.scaler.scale_[self.target_index]), float(self.scaler.min_[self.target_index])
            return (y - offset) / scale
        change = y * self.change_scale  # no offset: an output of 0 is exactly `last`, the persistence forecast
        if self.target_transform == "diff":
            return last.unsqueeze(1) + change
        return last.unsqueeze(1) * torch.exp(change)

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[stage]
        order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        return DataLoader(dataset, batch_size=None, sampler=BatchSampler(order, self.batch_size, drop_last=False))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict:
        """The fitted scaling and window layout as plain numbers, so checkpoints load with weights_only=True."""
        if self.scaler is None:
            return {}
        return {"columns": self.columns, "target": self.target, "features": self.features, "window": self.window,
                "horizon": self.horizon, "data_min": self.scaler.data_min_.tolist(),
                "data_max": self.scaler.data_max_.tolist(), "target_transform": self.target_transform,
                "change_scale": self.change_scale}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        if state["columns"] != self.columns:
            raise DataError(f"the checkpoint was trained on columns {state['columns']} but data.features/"
                            f"data.target give {self.columns}. Fix: use the same features and target.")
        transform = state.get("target_transform", "level")
        if transform != self.target_transform:
            raise DataError(f"the checkpoint was trained with data.target_transform={transform} but the config "
                            f"gives {self.target_transform}. Fix: data.target_transform={transform}.")
        self.scaler = MinMaxScaler().fit(np.array([state["data_min"], state["data_max"]]))
        self.change_scale = state.get("change_scale")
