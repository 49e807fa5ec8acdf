"""Each ticker's scaling, the one owner of it: fit on the ticker's training rows only (no test leakage) or loaded from
a checkpoint, saved in checkpoints as plain numbers, and inverted by `to_price`."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import MinMaxScaler
from torch import Tensor

from lstm_zoo.data.sources import DataError
from lstm_zoo.data.windows import target_change


class Scaling:
    """Per ticker: a MinMaxScaler over `columns` (features, then the target), and for a change target (`diff`,
    `log_return`) the standard deviation of its training period's one-day target changes (`change_scales`)."""

    def __init__(self, columns: list[str], target: str, target_transform: str) -> None:
        self.columns, self.target, self.target_transform = columns, target, target_transform
        self.target_index = columns.index(target)
        self.scalers: dict[str, MinMaxScaler] = {}  # per ticker, fit on its training rows only
        self.change_scales: dict[str, float] = {}  # per ticker: std of its training period's one-day target changes
        self.tensors: dict[str, Tensor] = {}  # the target's scale, offset and change scale per ticker (`cache`)

    @property
    def scaler(self) -> MinMaxScaler | None:
        """The scaler of a single-ticker run (None before setup)."""
        return next(iter(self.scalers.values())) if len(self.scalers) == 1 else None

    def fit(self, name: str, train: pd.DataFrame, where: str) -> None:
        """Fit the ticker's scaler and change scale on its training rows only, unless a checkpoint gave them."""
        if name not in self.scalers:
            constant = [c for c in self.columns if train[c].max() == train[c].min()]
            if constant:
                raise DataError(f"{where}: column(s) {constant} are constant over the training period, so MinMax "
                                "scaling is undefined and there is nothing to learn. Fix: choose other "
                                "data.features/data.target or a longer training period.")
            self.scalers[name] = MinMaxScaler().fit(train[self.columns].to_numpy())  # train only: no test leakage
        if name not in self.change_scales and self.target_transform != "level":
            prices = train[self.target].to_numpy()
            changes = target_change(prices[1:], prices[:-1], self.target_transform, self.target, where)
            self.change_scales[name] = float(np.std(changes))
            if not self.change_scales[name] > 1e-9 * np.abs(changes).max():  # 0 up to rounding: constant changes
                raise DataError(f"{where}: every one-day change of {self.target} over the training period is the "
                                f"same, so data.target_transform={self.target_transform} has no change scale (its "
                                "standard deviation is 0). Fix: data.target_transform=level, or a training period "
                                "whose prices move.")

    def change(self, name: str, future: np.ndarray, last: np.ndarray, where: str) -> np.ndarray:
        """The change from `last` to `future` prices in model units: divided by the ticker's change scale (float64)."""
        return target_change(future, last, self.target_transform, self.target, where) / self.change_scales[name]

    def adopt(self, names: list[str]) -> None:
        """A checkpoint's scaling (eval.py) must cover this run's tickers; a one-series model scores any one series."""
        if not self.scalers:
            return
        loaded = list(self.scalers)
        if len(loaded) == 1 and len(names) == 1:
            if loaded[0] not in (names[0], "series"):  # "series": a checkpoint from before tickers were recorded
                warnings.warn(f"{names[0]} is scaled with the scaler fit on {loaded[0]}, the series the model was "
                              f"trained on: its forecasts assume {names[0]}'s prices behave like {loaded[0]}'s.",
                              stacklevel=3)
            self.scalers = {names[0]: self.scalers[loaded[0]]}
            change = self.change_scales.get(loaded[0])
            self.change_scales = {} if change is None else {names[0]: change}
        elif set(names) - set(loaded):
            raise DataError(f"the checkpoint was trained on tickers {loaded} but the data gives {names}. Fix: "
                            f"data.tickers=[{','.join(loaded)}] (a subset works too).")

    def cache(self, tickers: list[str]) -> None:
        """Per-ticker target scaling as float64 tensors (in `tickers` order), gathered by `to_price`."""
        names = [t for t in tickers if t in self.scalers] or list(self.scalers)
        i = self.target_index
        self.tensors = {
            "scale": torch.tensor([self.scalers[t].scale_[i] for t in names], dtype=torch.float64),
            "offset": torch.tensor([self.scalers[t].min_[i] for t in names], dtype=torch.float64),
            "change": torch.tensor([self.change_scales.get(t, float("nan")) for t in names], dtype=torch.float64),
        }

    def to_price(self, y: Tensor, last: Tensor, ticker: Tensor | None = None) -> Tensor:
        """Model outputs (B, H) in scaled units -> prices (B, H); `last` (B,) anchors change-based targets and
        `ticker` (B,) picks each window's scaling (default: the first ticker)."""
        y = y.double()  # prices in float64, like the true ones they are compared with
        index = ticker if ticker is not None else torch.zeros(len(y), dtype=torch.long, device=y.device)

        def per_window(name: str) -> Tensor:  # (B, 1), float64
            return self.tensors[name].to(device=y.device)[index].unsqueeze(1)

        if self.target_transform == "level":
            return (y - per_window("offset")) / per_window("scale")
        change = y * per_window("change")  # no offset: an output of 0 is exactly `last`, the persistence forecast
        if self.target_transform == "diff":
            return last.unsqueeze(1) + change
        return last.unsqueeze(1) * torch.exp(change)

    def state_dict(self) -> dict:
        """The fitted scaling as plain numbers, so checkpoints load with weights_only=True."""
        names = list(self.scalers)
        return {"tickers": names, "data_min": [self.scalers[t].data_min_.tolist() for t in names],
                "data_max": [self.scalers[t].data_max_.tolist() for t in names],
                "change_scale": [self.change_scales.get(t) for t in names]}

    def load_state_dict(self, state: dict) -> None:
        names, lows, highs, changes = (state.get("tickers"), state["data_min"], state["data_max"],
                                       state.get("change_scale"))
        if names is None:  # written before several tickers: one series, flat lists
            names, lows, highs, changes = ["series"], [lows], [highs], [changes]
        self.scalers = {t: MinMaxScaler().fit(np.array([lo, hi])) for t, lo, hi in zip(names, lows, highs)}
        self.change_scales = {t: c for t, c in zip(names, changes) if c is not None}
        self.cache([])
