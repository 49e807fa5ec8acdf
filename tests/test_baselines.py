"""Baselines (lstm_zoo.models.baselines): exact fits, no look-ahead, every entry point, one MCS beside an LSTM."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from sklearn.linear_model import Ridge

from lstm_zoo.checkpoints import load_forecaster
from lstm_zoo.data import StockDataModule
from lstm_zoo.data.splits import WalkForward
from lstm_zoo.errors import ConfigError, user_error
from lstm_zoo.evaluation.backtest import compare_backtest
from lstm_zoo.evaluation.confidence import Bootstrap
from lstm_zoo.export import export
from lstm_zoo.forecasting import predict
from lstm_zoo.models import (
    ARIMAForecaster,
    DriftForecaster,
    ETSForecaster,
    FittedForecaster,
    MeanForecaster,
    RidgeForecaster,
)
from lstm_zoo.models.baselines import FitError
from lstm_zoo.pipeline import evaluate, run
from tests.conftest import CONF, FAST, compose_entry, compose_train, fitted_models, write_tickers_csv
from tests.helpers import run_main

# every model fit in closed form, by its conf/model name: a baseline added there is tested here by itself
FITTED = {name: get_class(OmegaConf.load(CONF / "model" / f"{name}.yaml")._target_) for name in fitted_models()}
QUICK = [o for o in FAST if not o.startswith("model.")]  # baselines have no hidden_size


def series_csv(path: Path, high: np.ndarray, start: str = "2015-01-01") -> Path:
    """A one-column (High) price file on business days."""
    dates = pd.bdate_range(start, periods=len(high))
    pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "High": high}).to_csv(path, index=False)
    return path


def fitted(cls: type[FittedForecaster], datamodule: StockDataModule, **kwargs) -> FittedForecaster:
    datamodule.setup("fit")
    model = cls(window=datamodule.window, horizon=datamodule.horizon, n_features=datamodule.n_features, **kwargs)
    model.fit(datamodule)
    return model


def test_ridge_equals_the_closed_form_least_squares_solution(prices_csv: Path) -> None:
    datamodule = StockDataModule(path=str(prices_csv), window=8, horizon=2, target_transform="diff")
    model = fitted(RidgeForecaster, datamodule, alphas=[0.5])
    train = datamodule.datasets["train"]
    X, Y = train.x.flatten(1).double().numpy(), train.y.double().numpy()
    # ridge as ordinary least squares on the centred data stacked over sqrt(alpha) I (the intercept unpenalised)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    stacked = np.vstack([Xc, np.sqrt(0.5) * np.eye(X.shape[1])])
    coef = np.linalg.lstsq(stacked, np.vstack([Yc, np.zeros((X.shape[1], 2))]), rcond=None)[0]
    np.testing.assert_allclose(model.coef.numpy(), coef, rtol=1e-8, atol=1e-10)
    reference = Ridge(alpha=0.5).fit(X, Y)
    np.testing.assert_allclose(model.coef.numpy(), reference.coef_.T, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(model.intercept.numpy(), reference.intercept_, rtol=1e-6, atol=1e-9)
    forecast = model.forward_batch(train.x[:5], train.ticker[:5], datamodule.tickers)
    np.testing.assert_allclose(forecast.numpy(), reference.predict(X[:5]), rtol=1e-5, atol=1e-5)


def test_ridge_picks_the_penalty_of_lowest_validation_error(prices_csv: Path) -> None:
    datamodule = StockDataModule(path=str(prices_csv), window=8)
    alphas = [1e-3, 1.0, 1e3]
    model = fitted(RidgeForecaster, datamodule, alphas=alphas)
    val = datamodule.datasets["val"]
    errors = []
    for alpha in alphas:
        coef, intercept = RidgeForecaster.solve(datamodule.datasets["train"].x.flatten(1).double().numpy(),
                                                datamodule.datasets["train"].y.double().numpy(), alpha)
        errors.append(np.mean((val.x.flatten(1).double().numpy() @ coef + intercept - val.y.numpy()) ** 2))
    assert float(model.alpha) == alphas[int(np.argmin(errors))]


def test_ridge_without_validation_windows_picks_the_penalty_by_leave_one_out(prices_csv: Path) -> None:
    from sklearn.linear_model import RidgeCV

    datamodule = StockDataModule(path=str(prices_csv), window=8, val_fraction=0.0)
    alphas = [1e-3, 1.0, 1e3]
    model = fitted(RidgeForecaster, datamodule, alphas=alphas)
    train = datamodule.datasets["train"]
    expected = RidgeCV(alphas=alphas).fit(train.x.flatten(1).double().numpy(), train.y.double().numpy()).alpha_
    assert float(model.alpha) == expected


def test_drift_forecasts_a_pure_drift_series_exactly(tmp_path: Path) -> None:
    """(level target: diff and log_return refuse a series whose changes are all equal, they have no scale)"""
    csv = series_csv(tmp_path / "drift.csv", 100.0 + 0.5 * np.arange(800))
    datamodule = StockDataModule(path=str(csv), window=10, horizon=3)
    model = fitted(DriftForecaster, datamodule)
    assert float(model.drift[0]) == pytest.approx(0.5, rel=1e-12)
    test = datamodule.datasets["test"]
    prices = datamodule.to_price(model.forward_batch(test.x, test.ticker, datamodule.tickers), test.last, test.ticker)
    np.testing.assert_allclose(prices.numpy(), test.actual.numpy(), rtol=1e-6)


def test_arima_recovers_the_coefficient_of_a_simulated_ar1(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    z = np.zeros(1500)
    for t in range(1, len(z)):
        z[t] = 0.6 * z[t - 1] + rng.normal()
    datamodule = StockDataModule(path=str(series_csv(tmp_path / "ar1.csv", 100 + z)), window=20)
    model = fitted(ARIMAForecaster, datamodule)
    assert float(model.d[0]) == 0  # the unit-root test rejects: no differencing
    assert float(model.weights[0, 0]) == pytest.approx(0.6, abs=0.05)  # the AR(infinity) lag-1 weight
    assert float(model.weights[0, 1:].abs().max()) < 0.1
    assert float(model.mean[0]) == pytest.approx(100.0, abs=0.3)


@pytest.mark.parametrize("name", list(FITTED))
def test_no_baseline_sees_a_price_on_or_after_its_folds_first_test_day(tmp_path: Path, name: str) -> None:
    csv = write_tickers_csv(tmp_path / "stocks.csv", start="2017-01-01", end="2020-12-31")
    fold = WalkForward(fold=0, n_folds=2)
    changed = pd.read_csv(csv)
    original = StockDataModule(path=str(csv), tickers=["AAA", "BBB"], window=10, horizon=2, backtest=fold)
    fitted_model = fitted(FITTED[name], original)
    later = pd.to_datetime(changed["Date"]) >= original.period.test_start
    changed.loc[later, ["Open", "High", "Low", "Close"]] *= 1.7  # every test-period price (and after) changes
    changed.to_csv(tmp_path / "changed.csv", index=False)
    other = StockDataModule(path=str(tmp_path / "changed.csv"), tickers=["AAA", "BBB"], window=10, horizon=2,
                            backtest=fold)
    refit = fitted(FITTED[name], other)
    before, after = fitted_model.state_dict(), refit.state_dict()
    assert before.keys() == after.keys() and len(before) > 3
    for key in before:
        torch.testing.assert_close(before[key], after[key], rtol=0, atol=0, equal_nan=True, msg=key)
    assert not torch.equal(other.datasets["test"].actual, original.datasets["test"].actual)  # the change hit the test


@pytest.mark.parametrize("name", [*FITTED, "dlinear"])
def test_each_baseline_trains_evaluates_and_predicts_like_any_model(tmp_path: Path, name: str) -> None:
    csv = write_tickers_csv(tmp_path / "stocks.csv", start="2019-01-01")
    data = ["data=csv", f"data.path={csv}", "data.tickers=[AAA,BBB]"]
    extra = {"dlinear": ["model.kernel_size=5"], "arima": ["model.max_p=1", "model.max_q=1"]}.get(name, [])
    cfg = compose_train([*data, *QUICK, "data.target_transform=diff", "data.horizon=2", f"model={name}", *extra],
                        tmp_path / "run")
    metrics = run(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "completed" and np.isfinite(metrics["test/pooled/skill"])
    assert np.isfinite(metrics["val/loss"]) and (tmp_path / "run" / "predictions.csv").is_file()
    if name != "dlinear":  # fit in one pass: no Lightning epochs
        assert metrics["epochs"] == 0 and metrics["optimizer_steps"] == 0 and metrics["num_parameters"] > 0
    checkpoint = Path(metrics["best_checkpoint"])
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(checkpoint)) == []
    evaluated = evaluate(compose_entry("eval", [f"ckpt_path={checkpoint}", *data], tmp_path / "eval"))
    assert evaluated["test/rmse"] == pytest.approx(metrics["test/rmse"], rel=1e-9)
    frame = predict(compose_entry("predict", [f"ckpt_path={checkpoint}", *data, "calendar=null"], tmp_path / "pred"))
    assert sorted(frame["ticker"].unique()) == ["AAA", "BBB"] and frame["forecast"].notna().all()


def test_a_baseline_and_an_lstm_are_ranked_in_one_confidence_set(tmp_path: Path) -> None:
    csv = write_tickers_csv(tmp_path / "stocks.csv", start="2019-01-01")
    data = ["data=csv", f"data.path={csv}", "data.tickers=[AAA,BBB]"]
    sweep = tmp_path / "sweep"
    for job, model in enumerate([["model=linear"], ["model=vanilla", "model.hidden_size=8"]]):
        cfg = compose_train([*data, *QUICK, *model], sweep / str(job))
        run(cfg)
        OmegaConf.save(cfg, sweep / str(job) / ".hydra" / "config.yaml")  # what read_sweep groups runs by
    tables = compare_backtest(sweep, ["model._target_"], Bootstrap(block_size=5, reps=100, seed=0))
    pooled = tables["pooled"]
    assert {"lstm_zoo.models.RidgeForecaster", "lstm_zoo.models.RNNForecaster", "persistence"} <= set(pooled.index)
    assert pooled["in_mcs_0.1"].notna().all() and pooled["in_mcs_0.1"].any()
    assert (sweep / "leaderboard.md").read_text().count("RidgeForecaster") >= 1
    # the ridge is fit without gradient descent: the best (only) baseline the LSTM is tested against
    assert pooled["fitted"].to_dict() == {"lstm_zoo.models.RidgeForecaster": True,
                                          "lstm_zoo.models.RNNForecaster": False,
                                          "persistence": pytest.approx(np.nan, nan_ok=True)}
    tests = json.loads((sweep / "leaderboard.json").read_text())
    assert tests["best_baseline"] == "lstm_zoo.models.RidgeForecaster" == tables["best_baseline"]
    assert tests["trained"] == ["lstm_zoo.models.RNNForecaster"] and 0 <= tests["spa_p_vs_best_baseline"] <= 1
    assert "'no trained model beats the best baseline': benchmark lstm_zoo.models.RidgeForecaster" in (
        sweep / "leaderboard.md").read_text()


def test_an_arima_that_does_not_converge_fails_its_job_in_one_line(tmp_path: Path) -> None:
    csv = write_tickers_csv(tmp_path / "stocks.csv", start="2019-01-01")
    cfg = compose_train(["data=csv", f"data.path={csv}", "data.tickers=[AAA,BBB]", *QUICK, "model=arima",
                         "model.max_iterations=1"], tmp_path / "run")
    with pytest.raises(Exception) as caught:
        run(cfg)
    cause = user_error(caught.value)
    assert isinstance(cause, FitError) and "\n" not in str(cause)
    assert re.search(r"on ticker '(AAA|BBB)' for any of \['ARIMA\(0,[01],0\)', .* model.max_iterations=1\). Fix: ",
                     str(cause))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("FitError: ARIMA did not converge")


def test_bad_baseline_configs_are_one_line_errors() -> None:
    with pytest.raises(ConfigError, match=r"model.lags=20 does not fit in data.window=10.*Fix"):
        RidgeForecaster(window=10, lags=20)
    for cls in FITTED.values():
        with pytest.raises(ConfigError, match=r"model.quantiles=\[0.1, 0.5, 0.9\].*point forecast only.*Fix"):
            cls(window=10, quantiles=[0.1, 0.5, 0.9])


def test_a_baseline_reading_the_target_history_needs_the_target_in_the_window(prices_csv: Path) -> None:
    datamodule = StockDataModule(path=str(prices_csv), window=10, features=["Low"])  # target High left out
    with pytest.raises(ConfigError, match=r"data.features=\['Low'\] leaves it out.*Fix: add High to data.features"):
        fitted(DriftForecaster, datamodule)
    assert fitted(MeanForecaster, datamodule).means.shape == (1, 1)  # the mean target needs no window


def test_a_fitted_checkpoint_loads_weights_only_with_its_fitted_values(tmp_path: Path, prices_csv: Path) -> None:
    datamodule = StockDataModule(path=str(prices_csv), window=10)
    model = fitted(ETSForecaster, datamodule)
    model.save_fitted(tmp_path / "ets.ckpt", datamodule.state_dict())
    loaded, data_state = load_forecaster(tmp_path / "ets.ckpt")
    assert type(loaded) is ETSForecaster and data_state["window"] == 10
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, equal_nan=True)
    x = datamodule.datasets["test"].x[:4]
    assert torch.equal(loaded(x), model(x))


def test_a_one_series_baseline_exports_and_a_per_ticker_one_says_why_not(tmp_path: Path, prices_csv: Path) -> None:
    cfg = compose_train(["data=csv", f"data.path={prices_csv}", *QUICK, "data.horizon=2", "model=arima",
                         "model.max_p=1", "model.max_q=0"], tmp_path / "run")
    checkpoint = run(cfg)["best_checkpoint"]
    for format in ("torchscript", "onnx"):
        info = export(compose_entry("export", [f"ckpt_path={checkpoint}", f"format={format}"], tmp_path / format))
        assert info["parity_max_abs_diff"] <= 1e-4 and info["output"]["shape"] == ["batch", 2]
    stocks = write_tickers_csv(tmp_path / "stocks.csv", start="2019-01-01")
    cfg = compose_train(["data=csv", f"data.path={stocks}", "data.tickers=[AAA,BBB]", *QUICK, "model=drift"],
                        tmp_path / "drift")
    checkpoint = run(cfg)["best_checkpoint"]
    with pytest.raises(Exception) as caught:
        export(compose_entry("export", [f"ckpt_path={checkpoint}", "format=torchscript"], tmp_path / "drift_export"))
    assert "fit per ticker on ['AAA', 'BBB']" in str(user_error(caught.value))


@pytest.mark.slow
def test_a_sweep_goes_on_past_an_arima_that_does_not_converge(tmp_path: Path) -> None:
    csv = write_tickers_csv(tmp_path / "stocks.csv", start="2019-01-01")
    sweep = tmp_path / "sweep"
    done = run_main("train.py", ["-m", "model=arima", "model.max_iterations=1,50", "model.max_p=1", "model.max_q=0",
                                 "data=csv", f"data.path={csv}", "data.tickers=[AAA,BBB]", *QUICK,
                                 f"hydra.sweep.dir={sweep}"])
    statuses = {}
    for path in sweep.glob("*/metrics.json"):
        failing = "model.max_iterations=1\n" in (path.parent / ".hydra" / "overrides.yaml").read_text()
        statuses[failing] = json.loads(path.read_text())["status"]
    assert statuses == {True: "failed", False: "completed"}  # the job after the failed one ran
    assert done.returncode == 1 and "FitError: ARIMA did not converge" in done.stdout
