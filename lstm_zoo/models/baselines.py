"""Baselines on the LSTMs' own windows: models fit once, without Lightning epochs (drift, mean, ridge, ARIMA, ETS;
`FittedForecaster`s, see lstm_zoo.models.fitted), and DLinear, trained by the same Lightning loop as the LSTMs.

Per-series models (drift, mean, ARIMA, ETS) keep one set of fitted values per ticker.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from lstm_zoo.data import DataError
from lstm_zoo.errors import ConfigError
from lstm_zoo.models.base import Forecaster
from lstm_zoo.models.fitted import FittedForecaster

log = logging.getLogger(__name__)


class FitError(DataError):
    """A statistical model that cannot be fit on a ticker's training period (e.g. no ARIMA order converged)."""


class DriftForecaster(FittedForecaster):
    """Random walk with drift: last price + h x the mean one-day change of the ticker's training period."""

    def fit_windows(self, x, y, last, actual, ticker, datamodule) -> None:
        drift = [np.diff(s).mean() for s in self.series(last, actual, ticker).values()]
        self.register_buffer("drift", torch.tensor(drift, dtype=torch.float64))

    def predict_prices(self, prices: Tensor, index: Tensor) -> Tensor:
        steps = torch.arange(1, self.hparams.horizon + 1, dtype=torch.float64, device=prices.device)
        return prices[:, -1:] + self.drift[index, None] * steps


class MeanForecaster(FittedForecaster):
    """The ticker's mean training target, in the target's units: the historical mean change for `diff` and
    `log_return` targets (close to drift there), the historical mean (scaled) price for `level` (darts' NaiveMean)."""

    reads_target_history = False

    def fit_windows(self, x, y, last, actual, ticker, datamodule) -> None:
        means = [y[ticker == i].mean(0) for i in range(len(self.hparams.tickers))]
        self.register_buffer("means", torch.stack(means))

    def predict_y(self, x: Tensor, index: Tensor) -> Tensor:
        return self.means[index].float()


class RidgeForecaster(FittedForecaster):
    """Ridge regression of the targets (all horizons) on the last `lags` days of the window (all features), one
    global model over the tickers (each scaled as the data module scales it). The penalty is chosen from `alphas`
    by the validation windows' MSE (by leave-one-out on the training windows when there are none).

    Args:
        lags: how many of the window's last days it reads (None: the whole window).
        alphas: candidate penalties (the intercept is not penalised).
    """

    reads_target_history = False  # any features: the whole window is its input

    def __init__(self, lags: int | None = None, alphas: Sequence[float] = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4),
                 **kwargs) -> None:
        super().__init__(**kwargs)
        window = self.hparams.window
        if lags is not None and not 1 <= int(lags) <= window:
            raise ConfigError(f"model.lags={lags} does not fit in data.window={window}: the ridge reads the window's "
                              f"last lags days. Fix: model.lags<={window} (or null: the whole window), or a longer "
                              "data.window.")
        if not alphas or min(alphas) < 0:
            raise ConfigError(f"model.alphas={list(alphas)}: give at least one penalty >= 0, e.g. [0.01,1,100].")
        self.lags = int(lags) if lags is not None else window
        self.alphas = [float(a) for a in alphas]

    def design(self, x: Tensor) -> Tensor:
        return x[:, -self.lags :, :].flatten(1).double()

    @staticmethod
    def solve(X: np.ndarray, Y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form ridge with an unpenalised intercept: (Xc'Xc + alpha I)^-1 Xc'Yc, on centred X and Y."""
        x_mean, y_mean = X.mean(0), Y.mean(0)
        Xc, Yc = X - x_mean, Y - y_mean
        coef = np.linalg.solve(Xc.T @ Xc + alpha * np.eye(X.shape[1]), Xc.T @ Yc)
        return coef, y_mean - x_mean @ coef

    def fit_windows(self, x, y, last, actual, ticker, datamodule) -> None:
        X, Y = self.design(x).numpy(), y.numpy()
        val = datamodule.datasets.get("val")
        if len(self.alphas) == 1:
            alpha = self.alphas[0]
        elif val is not None and len(val):
            Xv, Yv = self.design(val.x.cpu()).numpy(), val.y.double().cpu().numpy()
            errors = [np.mean((Xv @ c + b - Yv) ** 2) for c, b in (self.solve(X, Y, a) for a in self.alphas)]
            alpha = self.alphas[int(np.argmin(errors))]
        else:
            from sklearn.linear_model import RidgeCV
            alpha = float(RidgeCV(alphas=self.alphas).fit(X, Y).alpha_)
        coef, intercept = self.solve(X, Y, alpha)
        log.info("ridge on %d windows x %d inputs: alpha=%g (from %s)", *X.shape, alpha, self.alphas)
        self.register_buffer("coef", torch.tensor(coef))
        self.register_buffer("intercept", torch.tensor(intercept))
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float64))

    def predict_y(self, x: Tensor, index: Tensor) -> Tensor:
        return (self.design(x) @ self.coef + self.intercept).float()


class LinearFilterForecaster(FittedForecaster):
    """A per-ticker linear recursion on the window's prices; ARIMA and ETS only differ in how they are fit."""

    max_iterations: int

    def fit_windows(self, x, y, last, actual, ticker, datamodule) -> None:
        fits = [self.fit_series(s, name) for s, name in zip(self.series(last, actual, ticker).values(),
                                                            self.hparams.tickers)]
        for key in fits[0]:
            self.register_buffer(key, torch.tensor(np.array([f[key] for f in fits]), dtype=torch.float64))

    def fit_series(self, prices: np.ndarray, name: str) -> dict[str, np.ndarray | float]:
        raise NotImplementedError

    def best_fit(self, candidates: dict, fit, name: str, what: str):
        """The converged candidate of lowest AIC; FitError (one line, naming the ticker) if none converged."""
        results = {}
        for label, model in candidates.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence is read from the result, not from the warnings
                result = fit(model)
            if result.mle_retvals.get("converged", True) and np.isfinite(result.aic):
                results[label] = result
        if not results:
            raise FitError(f"{what} did not converge on ticker {name!r} for any of {list(candidates)} (within "
                           f"model.max_iterations={self.max_iterations}). Fix: a larger model.max_iterations, or "
                           f"drop {name} from data.tickers.")
        label = min(results, key=lambda k: results[k].aic)
        log.info("%s on %s: %s (AIC %.1f)", what, name, label, results[label].aic)
        return label, results[label]


class ARIMAForecaster(LinearFilterForecaster):
    """ARIMA(p, d, q) per ticker, fit by statsmodels on the training period: d from an ADF unit-root test (d=1
    unless the test rejects a unit root at 5%), (p, q) up to (max_p, max_q) by AIC (each candidate's
    likelihood maximised by statsmodels' state-space ARIMA, no standard errors computed), a constant (the mean, or the
    drift when d=1). A test day's forecast filters the window with the fitted parameters, through the model's
    AR(infinity) form truncated to the window (no refit per day).
    """

    def __init__(self, max_p: int = 1, max_q: int = 1, max_iterations: int = 50, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_p, self.max_q, self.max_iterations = int(max_p), int(max_q), int(max_iterations)

    def fit_series(self, prices: np.ndarray, name: str) -> dict[str, np.ndarray | float]:
        from statsmodels.tsa.arima.model import ARIMA
        from statsmodels.tsa.arima_process import arma2ar
        from statsmodels.tsa.stattools import adfuller

        with warnings.catch_warnings():  # statsmodels 0.15 announces a new return type; the p-value stays [1]
            warnings.simplefilter("ignore", FutureWarning)
            d = 0 if adfuller(prices)[1] < 0.05 else 1
        z = np.diff(prices, d)
        orders = {f"ARIMA({p},{d},{q})": (p, q) for p in range(self.max_p + 1) for q in range(self.max_q + 1)}
        candidates = {label: ARIMA(z, order=(p, 0, q), trend="c", concentrate_scale=True)
                      for label, (p, q) in orders.items()}
        label, result = self.best_fit(candidates, lambda m: m.fit(  # no standard errors: only AIC and parameters
            method_kwargs={"maxiter": self.max_iterations}, cov_type="none", low_memory=True), name, "ARIMA")
        params = dict(zip(result.model.param_names, result.params))
        p, q = orders[label]
        ar = np.r_[1, [-params[f"ar.L{i}"] for i in range(1, p + 1)]]
        ma = np.r_[1, [params[f"ma.L{i}"] for i in range(1, q + 1)]]
        weights = -arma2ar(ar, ma, lags=self.hparams.window + 1)[1:]  # z_t - mu = sum_j w_j (z_t-j - mu) + e_t
        return {"weights": weights, "mean": params["const"], "d": float(d)}

    def predict_prices(self, prices: Tensor, index: Tensor) -> Tensor:
        differenced = self.d[index, None] == 1  # both forecasts, then each row's: no data-dependent branch (export)
        return torch.where(differenced, self.forecast_rows(prices, index, 1), self.forecast_rows(prices, index, 0))

    def forecast_rows(self, prices: Tensor, index: Tensor, d: int) -> Tensor:
        z = torch.diff(prices, dim=1) if d else prices
        mean, weights = self.mean[index, None], self.weights[index, : z.shape[1]].flip(1)  # oldest lag first
        steps = []
        for _ in range(self.hparams.horizon):
            step = mean[:, 0] + ((z - mean) * weights).sum(1)
            steps.append(step)
            z = torch.cat([z[:, 1:], step[:, None]], dim=1)
        forecast = torch.stack(steps, dim=1)
        return prices[:, -1:] + forecast.cumsum(1) if d else forecast


class ETSForecaster(LinearFilterForecaster):
    """Exponential smoothing with additive errors, ETS(A,N,N) or ETS(A,A,N) per ticker (additive trend yes/no by
    AIC), fit by statsmodels on the training period. A test day's forecast runs the smoothing over the window with
    the fitted parameters (level started at the window's first price, trend at the fitted initial trend)."""

    def __init__(self, max_iterations: int = 1000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_iterations = int(max_iterations)

    def fit_series(self, prices: np.ndarray, name: str) -> dict[str, np.ndarray | float]:
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        candidates = {"ETS(A,N,N)": ETSModel(prices, error="add", trend=None),
                      "ETS(A,A,N)": ETSModel(prices, error="add", trend="add")}
        label, result = self.best_fit(candidates, lambda m: m.fit(disp=False, maxiter=self.max_iterations),
                                      name, "ETS")
        params = dict(zip(result.model.param_names, result.params))
        trend = label == "ETS(A,A,N)"
        return {"alpha": params["smoothing_level"], "beta": params["smoothing_trend"] if trend else 0.0,
                "initial_trend": params["initial_trend"] if trend else 0.0}

    def predict_prices(self, prices: Tensor, index: Tensor) -> Tensor:
        alpha, beta = self.alpha[index], self.beta[index]
        level, trend = prices[:, 0], self.initial_trend[index]
        for t in range(1, prices.shape[1]):
            error = prices[:, t] - level - trend
            level, trend = level + trend + alpha * error, trend + beta * error
        steps = torch.arange(1, self.hparams.horizon + 1, dtype=torch.float64, device=prices.device)
        return level[:, None] + trend[:, None] * steps


class DLinearForecaster(Forecaster):
    """DLinear (Zeng et al. 2023, "Are Transformers Effective for Time Series Forecasting?"): the window split by a
    moving average into trend and remainder, one linear layer on each, outputs summed. Trained like the LSTMs.

    Args:
        kernel_size: the moving average's length (the paper's 25); the window is padded with its first and last
            values, so any length works (one longer than the window mostly averages the padding).
    """

    def __init__(self, kernel_size: int = 25, **kwargs) -> None:
        super().__init__(**kwargs)
        if int(kernel_size) < 1:
            raise ConfigError(f"model.kernel_size={kernel_size} must be an integer >= 1 (the paper uses 25).")
        self.kernel_size = int(kernel_size)
        inputs = self.hparams.window * self.hparams.n_features
        self.trend = nn.Linear(inputs, self.output_size)
        self.remainder = nn.Linear(inputs, self.output_size)
        for layer in (self.trend, self.remainder):  # the paper's start: each output the window's mean
            nn.init.constant_(layer.weight, 1.0 / inputs)

    def moving_average(self, x: Tensor) -> Tensor:
        """(B, W, F) -> (B, W): the centred moving average, padded with the first and last values."""
        k = self.kernel_size
        front, back = x[:, :1].expand(-1, (k - 1) // 2, -1), x[:, -1:].expand(-1, k // 2, -1)
        padded = torch.cat([front, x, back], dim=1).transpose(1, 2)  # (B, F, W + k - 1)
        return nn.functional.avg_pool1d(padded, k, stride=1).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        trend = self.moving_average(x)
        return self.trend(trend.flatten(1)) + self.remainder((x - trend).flatten(1))
