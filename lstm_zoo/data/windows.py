"""Tensor windows and change targets (pure torch / numpy): views of one series, no per-sample Python loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lstm_zoo.data.sources import DataError

TARGET_TRANSFORMS = ("level", "diff", "log_return")


def target_change(future: np.ndarray, last: np.ndarray, transform: str, target: str = "target",
                  source: str = "data") -> np.ndarray:
    """Change from `last` to `future` in the transform's units: a price difference or a log-price difference."""
    if transform == "log_return":
        if (future <= 0).any() or (last <= 0).any():
            raise DataError(f"{source}: data.target_transform=log_return needs positive {target} values. "
                            "Fix: data.target_transform=diff.")
        return np.log(future) - np.log(last)
    return future - last


def make_windows(series: Tensor, target: Tensor, window: int, horizon: int) -> tuple[Tensor, Tensor]:
    """Sliding windows as views: x[i] = series[i : i+window], y[i] = target[i+window : i+window+horizon]."""
    n = series.shape[0] - window - horizon + 1
    x = series.unfold(0, window, 1)[:n].transpose(1, 2)  # (N, W, F), a view of `series`
    y = target[window:].unfold(0, horizon, 1)[:n]  # (N, H), a view of `target`
    return x, y


def series_windows(scaled: Tensor, prices: np.ndarray, window: int, horizon: int, n_features: int, target_index: int,
                   change: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x, y, last, actual) of every window of one series (see `Batch`): `scaled` (T, columns) is the scaled series,
    features first, on the device the windows live on; `prices` (T,) its target in price units. y is the scaled target,
    or `change(future (N, H), last (N, 1))`, the change target in model units, when given."""
    x, y = make_windows(scaled[:, :n_features], scaled[:, target_index], window, horizon)
    target = torch.tensor(prices, dtype=torch.float64, device=scaled.device)  # exact prices for metrics
    last = target[window - 1 : window - 1 + len(x)]
    actual = target[window:].unfold(0, horizon, 1)[: len(x)]  # (N, H) view
    if change is not None:  # y[i, k] = change from the window's last day to its k+1-th target
        future = np.lib.stride_tricks.sliding_window_view(prices[window:], horizon)[: len(x)]
        y = torch.tensor(change(future, prices[window - 1 : window - 1 + len(x), None]), dtype=torch.float32,
                         device=scaled.device)
    return x, y, last, actual


class Batch(NamedTuple):
    """What a model step sees; fields, not positions, so that a new field breaks no caller."""

    x: Tensor  # (B, window, features), MinMax-scaled on the training period of the window's ticker
    y: Tensor  # (B, horizon), the training target: scaled level, or scaled change from `last`
    last: Tensor  # (B,), float64: the last known target price (the persistence forecast)
    actual: Tensor  # (B, horizon), float64: the true target prices, never round-tripped through the scaler
    ticker: Tensor  # (B,), int64: index into the data module's `tickers`, the series each window belongs to


class WindowDataset(Dataset):
    """Windows held as tensors (views of one series for a single ticker); indexed with a whole batch at once."""

    def __init__(self, x: Tensor, y: Tensor, last: Tensor, actual: Tensor, ticker: Tensor | None = None) -> None:
        self.x, self.y, self.last, self.actual = x, y, last, actual
        self.ticker = ticker if ticker is not None else torch.zeros(len(x), dtype=torch.long, device=x.device)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: list[int]) -> Batch:
        return Batch(self.x[index], self.y[index], self.last[index], self.actual[index], self.ticker[index])

    @classmethod
    def concat(cls, parts: list[WindowDataset]) -> WindowDataset:
        """The windows of several tickers one after the other (one part stays a view: no copy)."""
        if len(parts) == 1:
            return parts[0]
        fields = ("x", "y", "last", "actual", "ticker")
        return cls(*(torch.cat([getattr(part, name) for part in parts]) for name in fields))
