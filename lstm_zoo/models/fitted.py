"""`FittedForecaster`: a model fit once by `fit(datamodule)`, without Lightning epochs (lstm_zoo.models.baselines).

A fitted model reads the same scaled windows and answers in the same target units as any Forecaster, so testing,
intervals, predictions.csv, leaderboards and predict.py treat it like any other model. `pipeline.run` calls its
`fit(datamodule)` instead of `trainer.fit`: the fit sees the `train` windows only (the `val` windows choose the ridge
penalty and calibrate the conformal intervals), never a test day. Fitted values are buffers (tensors), so the
checkpoint loads weights-only; a per-series model keeps one set of values per ticker.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor

from lstm_zoo.data import DataError, StockDataModule
from lstm_zoo.errors import ConfigError
from lstm_zoo.models.base import Forecaster


class FittedForecaster(Forecaster):
    """A Forecaster fit in one pass by `fit(datamodule)`, never by gradient descent (no Lightning epochs).

    Args beyond Forecaster's: tickers, target_transform, target_feature are set by `fit` from the data module and
    saved with the checkpoint's hyper-parameters (they say how to read windows and which fitted values are whose).
    """

    reads_target_history = True  # forecasts from the target's own past days in the window (drift, ARIMA, ETS)

    def __init__(self, tickers: Sequence[str] | None = None, target_transform: str = "level",
                 target_feature: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.quantiles:
            raise ConfigError(f"model.quantiles={list(self.quantiles)}: {type(self).__name__} gives a point forecast "
                              "only (its intervals are split-conformal, from the validation errors). Fix: "
                              "model.quantiles=null.")

    @property
    def num_parameters(self) -> int:
        """Fitted values (buffers): the model's size, as trainable parameters are for the others."""
        return sum(b.numel() for name, b in self.named_buffers() if "." not in name)

    # ---- fitting --------------------------------------------------------------------------------------------
    def fit(self, datamodule: StockDataModule) -> None:
        """Fit on `datamodule`'s training windows (set up); records the layout and each ticker's target scaling."""
        dm = datamodule
        if self.reads_target_history and dm.target_index >= dm.n_features:
            raise ConfigError(f"{type(self).__name__} forecasts {dm.target} from its own history, but data.features="
                              f"{dm.features} leaves it out of the window. Fix: add {dm.target} to data.features.")
        self.hparams.update(tickers=list(dm.tickers), target_transform=dm.target_transform,
                            target_feature=int(dm.target_index))
        scaling = dm.scaling.tensors  # per ticker, float64, in `tickers` order (scaled level = price * scale + offset)
        self.register_buffer("scale", scaling["scale"].clone())
        self.register_buffer("offset", scaling["offset"].clone())
        self.register_buffer("change", scaling["change"].clone())
        train = dm.datasets["train"]
        self.fit_windows(train.x.double().cpu(), train.y.double().cpu(), train.last.cpu(), train.actual.cpu(),
                         train.ticker.cpu(), dm)

    def fit_windows(self, x: Tensor, y: Tensor, last: Tensor, actual: Tensor, ticker: Tensor, datamodule) -> None:
        raise NotImplementedError

    def series(self, last: Tensor, actual: Tensor, ticker: Tensor) -> dict[int, np.ndarray]:
        """Each ticker's training target prices, in order: the windows' last prices, then the last window's targets."""
        out = {}
        for i in range(len(self.hparams.tickers)):
            rows = ticker == i
            out[i] = torch.cat([last[rows], actual[rows][-1]]).numpy()
        return out

    def save_fitted(self, path: Path, data_state: dict) -> None:
        """A checkpoint as Lightning writes one (state_dict, hyper-parameters, the data module's scaling), of plain
        values and tensors only: eval.py, predict.py and export.py load it weights-only like any other."""
        checkpoint = {"state_dict": self.state_dict(), "hyper_parameters": dict(self.hparams),
                      "pytorch-lightning_version": L.__version__, "epoch": 0, "global_step": 0, "loops": {},
                      "StockDataModule": data_state}
        self.on_save_checkpoint(checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        torch.save(checkpoint, partial)
        partial.replace(path)  # atomic, as Lightning's saves are

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Fitted buffers take their saved shapes (they are created by `fit`, whose sizes depend on the data)."""
        for name, value in checkpoint["state_dict"].items():
            if "." not in name:
                self.register_buffer(name, torch.empty_like(value))

    # ---- forecasting ----------------------------------------------------------------------------------------
    def own_index(self, ticker: Tensor, tickers: Sequence[str] | None) -> Tensor:
        """The data module's ticker indices (B,) -> indices into this model's fitted tickers, by name."""
        names = list(self.hparams.tickers or [])
        if len(names) <= 1 or tickers is None:
            if len(names) > 1:
                raise DataError(f"{type(self).__name__} was fit per ticker on {names}: a forecast needs each "
                                f"window's ticker, which an exported model is not given. Fix: export a fit on one "
                                f"ticker (data.tickers=[{names[0]}]).")
            return torch.zeros_like(ticker)
        missing = [t for t in tickers if t not in names]
        if missing:
            raise DataError(f"{type(self).__name__} was fit on tickers {names}, not {missing}. Fix: data.tickers="
                            f"[{','.join(names)}] (a subset works too).")
        lookup = torch.tensor([names.index(t) for t in tickers], device=ticker.device)
        return lookup[ticker]

    def forward_batch(self, x: Tensor, ticker: Tensor, tickers: Sequence[str] | None) -> Tensor:
        if "scale" not in self._buffers:
            raise RuntimeError(f"{type(self).__name__} is not fit yet: call fit(datamodule) (pipeline.run does), or "
                               "load a checkpoint.")
        return self.predict_y(x, self.own_index(ticker, tickers))

    def forward(self, x: Tensor) -> Tensor:  # one ticker's model (export, or a one-series fit)
        return self.forward_batch(x, torch.zeros_like(x[:, 0, 0], dtype=torch.long), None)  # keeps B symbolic

    def predict_y(self, x: Tensor, index: Tensor) -> Tensor:
        """Windows (B, W, F) of the model's tickers `index` (B,) -> forecasts (B, H) in the target's units."""
        prices = self.window_prices(x, index)
        return self.to_target(self.predict_prices(prices, index), prices[:, -1], index).float()

    def predict_prices(self, prices: Tensor, index: Tensor) -> Tensor:
        """Window prices (B, W), float64 -> price forecasts (B, H); univariate models define it."""
        raise NotImplementedError

    def window_prices(self, x: Tensor, index: Tensor) -> Tensor:
        scaled = x[..., self.hparams.target_feature].double()
        return (scaled - self.offset[index, None]) / self.scale[index, None]

    def to_target(self, prices: Tensor, last: Tensor, index: Tensor) -> Tensor:
        """Price forecasts (B, H) -> the data module's target units (the inverse of its `to_price`)."""
        transform = self.hparams.target_transform
        if transform == "level":
            return prices * self.scale[index, None] + self.offset[index, None]
        change = prices - last[:, None] if transform == "diff" else torch.log(prices / last[:, None])
        return change / self.change[index, None]
