"""StockDataModule: composes sources, splits and windows; owns the fitted scaling (saved in checkpoints)."""

from __future__ import annotations

import logging
from typing import Literal

import lightning as L
import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import MinMaxScaler
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

from lstm_zoo.data.sources import (
    DERIVED,
    EMBEDDED,
    DataError,
    add_derived_features,
    clean_prices,
    load_embedded_ibm,
    read_price_csv,
)
from lstm_zoo.data.splits import split_dates
from lstm_zoo.data.windows import TARGET_TRANSFORMS, WindowDataset, make_windows, target_change

log = logging.getLogger(__name__)


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
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"data.val_fraction={val_fraction} is out of range: it must be in [0, 1) "
                            "(0: no validation set, train on every training window).")
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

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        frame = self.load_frame()
        train_end, test_start = split_dates(frame.index, self.train_end, self.test_start, self.source)
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
            prices = train[self.target].to_numpy()
            changes = self._change(prices[1:], prices[:-1])
            self.change_scale = float(np.std(changes))
            if not self.change_scale > 1e-9 * np.abs(changes).max():  # 0 up to rounding: constant changes
                raise DataError(f"{self.source}: every one-day change of {self.target} over the training period "
                                f"is the same, so data.target_transform={self.target_transform} has no change "
                                "scale (its standard deviation is 0). Fix: data.target_transform=level, or a "
                                "training period whose prices move.")
        history = pd.concat([train.iloc[-self.window:], test])  # test windows start with the last `window` days
        train_windows, train_dates = self._windows(train)
        n_train, needed = len(train_dates), 2 if self.val_fraction > 0 else 1
        if n_train < needed:
            raise DataError(f"{self.source}: the training period gives {n_train} window(s); at least "
                            f"{needed} are needed (one to train{', one to validate' if needed == 2 else ''}). "
                            "Fix: a smaller data.window or more data.")
        n_val = min(max(round(n_train * self.val_fraction), 1), n_train - 1) if self.val_fraction > 0 else 0
        cut = n_train - n_val  # validation = the last windows of the training period, chronologically
        test_windows, self.test_dates = self._windows(history)
        self.val_dates = train_dates[cut:]
        self.datasets = {
            "train": WindowDataset(*(t[:cut] for t in train_windows)),
            "val": WindowDataset(*(t[cut:] for t in train_windows)),
            "test": WindowDataset(*test_windows),
        }
        log.info("%s: %d train / %d val / %d test windows (train to %s, test from %s)", self.source, cut, n_val,
                 len(self.test_dates), train_end.date(), test_start.date())

    def _change(self, future: np.ndarray, last: np.ndarray) -> np.ndarray:
        return target_change(future, last, self.target_transform, self.target, self.source)

    def _windows(self, part: pd.DataFrame) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], pd.DatetimeIndex]:
        """(x, y, last, actual) of every window of `part` (see `Batch`), and each window's first target date."""
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        scaled = torch.as_tensor(self.scaler.transform(part[self.columns].to_numpy()), dtype=torch.float32)
        scaled = scaled.to(device)  # whole series on the device once: no per-batch host-to-device copies
        prices = part[self.target].to_numpy()
        target = torch.tensor(prices, dtype=torch.float64, device=device)  # exact prices for metrics
        x, y = make_windows(scaled[:, : self.n_features], scaled[:, self.target_index], self.window, self.horizon)
        last = target[self.window - 1 : self.window - 1 + len(x)]
        actual = target[self.window :].unfold(0, self.horizon, 1)[: len(x)]  # (N, H) view
        if self.target_transform != "level":  # y[i, k] = change from the window's last day to its k+1-th target
            future = np.lib.stride_tricks.sliding_window_view(prices[self.window :], self.horizon)[: len(x)]
            change = self._change(future, prices[self.window - 1 : self.window - 1 + len(x), None])
            y = torch.tensor(change / self.change_scale, dtype=torch.float32, device=device)  # (N, H), float64 math
        return (x, y, last, actual), part.index[self.window : self.window + len(x)]

    def to_price(self, y: Tensor, last: Tensor) -> Tensor:
        """Model outputs (B, H) in scaled units -> prices (B, H); `last` (B,) anchors change-based targets."""
        y = y.double()  # prices in float64, like the true ones they are compared with
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
