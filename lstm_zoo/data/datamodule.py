"""StockDataModule: composes sources, splits and windows; owns the fitted scaling (saved in checkpoints)."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from lstm_zoo.data.scaling import Scaling
from lstm_zoo.data.sources import (
    DERIVED,
    EMBEDDED,
    DataError,
    add_derived_features,
    adjust_prices,
    check_columns,
    clean_prices,
    load_embedded,
    read_price_csv,
    select_ticker,
    split_tickers,
    ticker_names,
    untickered_rows,
)
from lstm_zoo.data.splits import Period, WalkForward, single_split, untrained_windows, validation_size
from lstm_zoo.data.windows import TARGET_TRANSFORMS, WindowDataset, series_windows

log = logging.getLogger(__name__)


def plain(value: object) -> object:
    """Config values as plain Python (lists, dicts, str, int, float, bool, None): checkpoints load weights-only."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class StockDataModule(L.LightningDataModule):
    """Daily price windows of one or several tickers, `window` past days -> the next `horizon` values of `target`.

    Batches are `Batch(x, y, last, actual, ticker)`: x (B, window, features) is scaled with a MinMaxScaler fit on
    the training period of the window's own ticker only; `last` (B,) is the last known target price and `actual`
    (B, horizon) the true target prices, both float64 in price units, so the persistence forecast and `to_price`
    need nothing else; `ticker` (B,) indexes `tickers`. y (B, horizon) depends on `target_transform`: `level`
    the MinMax-scaled target (the tutorial); `diff` the change target[t+k] - last and `log_return`
    log(target[t+k] / last), both divided by the standard deviation of the ticker's training-period one-day
    changes and never shifted, so a model output of 0 is exactly persistence.
    `features` may name derived columns (see DERIVED) besides the file's own.

    Several tickers (`tickers`, a list or "all") make one global model's data: each ticker is scaled on its own
    training rows, windows never span two tickers, and the validation set is the chronological end of each
    ticker's training windows. The split is `train_end`/`test_start`, or the fold of `backtest` (a WalkForward);
    test windows read the trading days right before each test day, also across a gap after `train_end`.
    """

    def __init__(self, path: str | None = None, target: str = "High", features: list[str] | None = None,
                 window: int = 60, horizon: int = 1, train_end: str | None = None, test_start: str | None = None,
                 val_fraction: float = 0.1, batch_size: int = 32, date_column: str = "Date",
                 ticker: str | None = None, tickers: list[str] | str | None = None, sep: str = ",",
                 target_transform: Literal["level", "diff", "log_return"] = "level", adjust: bool = False,
                 date_format: str | None = None, backtest: WalkForward | None = None) -> None:
        # every argument but the split object, as plain values: checkpoints carry the data the model was trained on
        self.config = plain({k: v for k, v in locals().items() if k not in ("self", "backtest", "__class__")})
        super().__init__()
        features = list(features) if features is not None else [target]
        for field, value, low in (("window", window, 1), ("horizon", horizon, 1), ("batch_size", batch_size, 1)):
            if int(value) < low:
                raise DataError(f"data.{field}={value} is out of range: it must be an integer >= {low}.")
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"data.val_fraction={val_fraction} is out of range: it must be in [0, 1) "
                            "(0: no validation set, train on every training window).")
        if not features:
            raise DataError("data.features is empty: list at least one column, e.g. data.features=[High].")
        if target_transform not in TARGET_TRANSFORMS:
            raise DataError(f"data.target_transform={target_transform!r} is not one of {list(TARGET_TRANSFORMS)}.")
        if isinstance(tickers, str) and tickers != "all":
            tickers = [tickers]
        if tickers is not None and not isinstance(tickers, str):
            tickers = [str(t) for t in tickers]
        if ticker is not None and tickers is not None:
            raise DataError(f"data.ticker={ticker!r} and data.tickers={tickers} are both set. Fix: one of them, e.g. "
                            f"data.ticker=null")
        if backtest is not None and (train_end is not None or test_start is not None):
            raise DataError(f"data.train_end={train_end} / data.test_start={test_start} and backtest both set the "
                            "split. Fix: data.train_end=null data.test_start=null (the folds set them).")
        self.path, self.target, self.features = path, target, features
        self.window, self.horizon, self.batch_size = int(window), int(horizon), int(batch_size)
        self.train_end, self.test_start, self.val_fraction = train_end, test_start, val_fraction
        self.date_column, self.date_format, self.ticker, self.sep = date_column, date_format, ticker, sep
        self.requested_tickers, self.backtest, self.adjust = tickers, backtest, bool(adjust)
        self.target_transform = target_transform
        self.columns = list(dict.fromkeys([*features, target]))  # scaled columns: features, then target
        self.target_index = self.columns.index(target)  # the target may also be one of the features
        self.derived = [c for c in self.columns if c in DERIVED]
        needed = [c for name in self.derived for c in DERIVED[name][0]]
        needed += ["Close", "Adj Close"] if self.adjust else []
        self.raw_columns = list(dict.fromkeys([c for c in self.columns if c not in DERIVED] + needed))
        self.tickers: list[str] = []  # the series of this run, in order; Batch.ticker indexes this list
        self.scaling = Scaling(self.columns, target, target_transform)  # per ticker, fit on its training rows only
        self.period: Period | None = None
        self.windows: dict[str, pd.DataFrame] = {}  # per stage, one row per window: ticker, date (first target), end
        self.datasets: dict[str, WindowDataset] = {}
        # eval/predict: {ticker: the first target day of the last window the checkpoint's model trained on}; the
        # validation windows up to it are dropped (conformal calibration needs windows the model never trained on)
        self.trained_until: dict[str, str] | None = None
        self.calibration_note: str | None = None  # why there are fewer (or no) calibration windows, when dropped

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def source(self) -> str:
        if self.path:
            return str(self.path)
        return EMBEDDED.format((self.ticker or "IBM") if self.requested_tickers is None else "stocks")

    @property
    def test_dates(self) -> pd.DatetimeIndex:
        """The first target day of every test window, in dataset order."""
        return pd.DatetimeIndex(self.windows["test"]["date"])

    @property
    def val_dates(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.windows["val"]["date"])

    def load_frames(self) -> dict[str, pd.DataFrame]:
        """Each selected ticker's cleaned, date-indexed frame of `columns` (derived features included)."""
        if self.path:
            raw, date_column, date_format = read_price_csv(self.path, self.sep), self.date_column, self.date_format
        else:
            raw, date_column, date_format = load_embedded(), "Date", None
        check_columns(raw, self.columns, self.adjust, self.source, trained=bool(self.scaling.scalers))
        if self.requested_tickers is not None:
            parts = split_tickers(raw, self.requested_tickers, self.source)
        else:  # one series: data.ticker's, the file's only one, or IBM from the embedded file (data=ibm)
            ticker = self.ticker or (None if self.path else "IBM")
            part = select_ticker(raw, ticker, self.source)
            parts = {ticker or next(iter(ticker_names(part)), Path(str(self.path)).stem): part}
        selected = self.requested_tickers is not None or self.ticker is not None  # rows without a ticker go
        blank = untickered_rows(raw) if selected else None
        notes = [blank] if blank else []  # one cleaning warning for the whole file
        frames = {}
        for name, part in parts.items():
            source = self.source if len(parts) == 1 else f"{self.source} [{name}]"
            found: list[str] = []
            frame = clean_prices(part, self.raw_columns, date_column, None, source, date_format, found)
            notes += found if len(parts) == 1 else [f"[{name}] {note}" for note in found]
            frame = adjust_prices(frame) if self.adjust else frame
            frames[name] = add_derived_features(frame, self.derived, source)[self.columns]
        if notes:
            warnings.warn(f"{self.source}: " + "; ".join(notes) + ".", stacklevel=2)
        return frames

    def latest_windows(self) -> tuple[Tensor, Tensor, dict[str, pd.Series]]:
        """Each ticker's last `window` days scaled as in training, x (T, window, features), its index into `tickers`
        (T,), and each ticker's target history (its last value is the last known price): what forecasts past the
        end of the data start from. Needs a checkpoint's scaling (`load_state_dict`)."""
        if not self.scaling.scalers:
            raise DataError("latest_windows needs the training scaling: load a checkpoint's data state first.")
        frames = self.load_frames()
        self.scaling.adopt(list(frames))
        self.tickers = list(frames)
        self.scaling.cache(self.tickers)
        windows = []
        for name, frame in frames.items():
            if len(frame) < self.window:
                where = self.source if len(frames) == 1 else f"{self.source} [{name}]"
                raise DataError(f"{where}: {len(frame)} usable row(s) after cleaning, but the model reads windows of "
                                f"data.window={self.window} days (from its checkpoint). Fix: data.path=<a file with "
                                f"at least {self.window} rows>.")
            recent = self.scaling.scalers[name].transform(frame[self.columns].to_numpy()[-self.window :])
            windows.append(torch.as_tensor(recent[:, : self.n_features], dtype=torch.float32))
        return torch.stack(windows), torch.arange(len(frames)), {n: f[self.target] for n, f in frames.items()}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        frames = self.load_frames()
        calendar = frames[next(iter(frames))].index
        for frame in list(frames.values())[1:]:
            calendar = calendar.union(frame.index)  # one trading calendar: all tickers share the fold dates
        self.period = (self.backtest.period(calendar, self.source) if self.backtest is not None
                       else single_split(calendar, self.train_end, self.test_start, self.source))
        self.scaling.adopt(list(frames))
        self.tickers = list(frames)
        parts: dict[str, list[WindowDataset]] = {"train": [], "val": [], "test": []}
        index: dict[str, list[pd.DataFrame]] = {"train": [], "val": [], "test": []}
        for i, (name, frame) in enumerate(frames.items()):
            where = self.source if len(frames) == 1 else f"{self.source} [{name}]"
            where += "" if self.backtest is None else f", {self.period.label}"
            fix = "Fix: a smaller data.window/data.horizon" + (", fewer backtest.n_folds" if self.backtest else
                                                               " or other split dates")
            fix += f", or drop {name} from data.tickers." if len(frames) > 1 else "."
            train, history = self.period.rows(frame, self.window, self.horizon, where, fix)
            self.scaling.fit(name, train, where)
            windows, dates = self._windows(name, train)
            cut = len(dates) - validation_size(len(dates), self.val_fraction, where)  # validation: the last windows
            test_windows, test_dates = self._windows(name, history)
            for stage, rows, (tensors, when) in (("train", slice(None, cut), (windows, dates)),
                                                 ("val", slice(cut, None), (windows, dates)),
                                                 ("test", slice(None), (test_windows, test_dates))):
                tensors = [t[rows] for t in tensors]
                ticker = torch.full((len(tensors[0]),), i, dtype=torch.long, device=tensors[0].device)
                parts[stage].append(WindowDataset(*tensors, ticker))
                index[stage].append(when.iloc[rows].assign(ticker=name))
        self.scaling.cache(self.tickers)
        self.datasets = {stage: WindowDataset.concat(p) for stage, p in parts.items()}
        self.windows = {stage: pd.concat(frames, ignore_index=True)[["ticker", "date", "end"]]
                        for stage, frames in index.items()}
        if self.trained_until is not None:
            self._drop_trained_validation_windows()
        test_days = self.windows["test"]["date"]
        log.info("%s%s: %d train / %d val / %d test windows (train to %s, test %s to %s)", self.source,
                 f" {self.tickers}" if len(self.tickers) > 1 else "", len(self.datasets["train"]),
                 len(self.datasets["val"]), len(self.datasets["test"]), self.period.train_end.date(),
                 test_days.min().date(), test_days.max().date())

    def _drop_trained_validation_windows(self) -> None:
        """Keep only the validation windows the checkpoint's model never trained on (`untrained_windows`)."""
        keep, self.calibration_note = untrained_windows(self.windows["val"], self.trained_until, self.source)
        if self.calibration_note is None:
            return
        index = torch.as_tensor(np.flatnonzero(keep), device=self.datasets["val"].x.device)
        self.datasets["val"] = WindowDataset(*self.datasets["val"][index])
        self.windows["val"] = self.windows["val"][keep].reset_index(drop=True)
        log.warning("conformal calibration: %s", self.calibration_note.removeprefix("none: "))

    def _windows(self, name: str, part: pd.DataFrame) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], pd.DataFrame]:
        """(x, y, last, actual) of every window of one ticker's consecutive rows `part` (see `Batch`), and each
        window's first and last target day."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        scaled = torch.as_tensor(self.scaling.scalers[name].transform(part[self.columns].to_numpy()),
                                 dtype=torch.float32).to(device)  # the series on the device once: no per-batch copies
        change = None if self.target_transform == "level" else \
            (lambda future, last: self.scaling.change(name, future, last, self.source))
        tensors = series_windows(scaled, part[self.target].to_numpy(), self.window, self.horizon, self.n_features,
                                 self.target_index, change)
        first = self.window + np.arange(len(tensors[0]))
        return tensors, pd.DataFrame({"date": part.index[first], "end": part.index[first + self.horizon - 1]})

    def to_price(self, y: Tensor, last: Tensor, ticker: Tensor | None = None) -> Tensor:
        """Model outputs (B, H) -> prices (B, H): `Scaling.to_price` with this data's scaling."""
        return self.scaling.to_price(y, last, ticker)

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

    def state_dict(self) -> dict:
        """The fitted scaling and window layout as plain numbers, so checkpoints load with weights_only=True."""
        if not self.scaling.scalers:
            return {}
        trained = self.windows.get("train")
        # each ticker's last training window (its first target day): calibration windows must come after it
        last_trained = {} if trained is None or trained.empty else \
            {t: str(d.date()) for t, d in trained.groupby("ticker")["date"].max().items()}
        backtest = None if self.backtest is None else plain(dataclasses.asdict(self.backtest))
        config = {**self.config, "path": str(Path(self.path).expanduser().resolve()) if self.path else None}
        return {"config": config, "backtest": backtest, "last_trained_window": last_trained,
                "columns": self.columns, "target": self.target, "features": self.features, "window": self.window,
                "horizon": self.horizon, "target_transform": self.target_transform, **self.scaling.state_dict()}

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
        self.scaling.load_state_dict(state)
