"""predict.py: forecasts past the end of the data, their dates and intervals, and the errors users see."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pytest

from lstm_zoo.data import DataError
from lstm_zoo.errors import CheckpointError, ConfigError, exit_on_user_error, user_error
from lstm_zoo.export import export
from lstm_zoo.forecasting import future_dates, predict
from lstm_zoo.pipeline import evaluate, run
from tests.conftest import FAST, compose_entry, compose_train, write_prices_csv, write_tickers_csv

TINY = [*FAST, "model=vanilla", "model.hidden_size=4", "trainer.limit_train_batches=2"]


def test_future_dates_are_exchange_sessions_or_plain_weekdays():
    dates, note = future_dates(pd.Timestamp("2012-12-21"), 4, "XNYS")  # a Friday before Christmas
    assert [d.date().isoformat() for d in dates] == ["2012-12-24", "2012-12-26", "2012-12-27", "2012-12-28"]
    assert note == "XNYS trading sessions"
    dates, note = future_dates(pd.Timestamp("2012-12-21"), 4, None)
    assert [d.date().isoformat() for d in dates] == ["2012-12-24", "2012-12-25", "2012-12-26", "2012-12-27"]
    assert "holidays not known" in note
    with pytest.raises(ConfigError, match=r"calendar='NOPE' is not an exchange calendar\. Fix: .*calendar=XNYS"):
        future_dates(pd.Timestamp("2012-12-21"), 4, "NOPE")


def test_predict_on_the_embedded_ibm_data_forecasts_the_five_sessions_after_it(tmp_path):
    run(compose_train(["data.horizon=5", *TINY], tmp_path / "run"))
    frame = predict(compose_entry("predict", [f"ckpt_path={tmp_path / 'run'}"], tmp_path / "predict"))
    assert [d.isoformat() for d in frame["date"]] == ["2013-03-04", "2013-03-05", "2013-03-06", "2013-03-07",
                                                      "2013-03-08"]
    assert list(frame.columns) == ["date", "ticker", "step", "forecast", "lower_80", "upper_80", "lower_95",
                                   "upper_95", "persistence"]
    assert (frame["persistence"] == 202.94).all()  # IBM's High on 2013-03-01, the last day of the data
    assert ((frame["lower_95"] <= frame["lower_80"]) & (frame["lower_80"] <= frame["forecast"])
            & (frame["forecast"] <= frame["upper_80"]) & (frame["upper_80"] <= frame["upper_95"])).all()
    written = pd.read_csv(tmp_path / "predict" / "forecast.csv")
    assert written["forecast"].tolist() == pytest.approx(frame["forecast"].tolist())
    assert (tmp_path / "predict" / "forecast.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model with horizon 3, a change target and two features on synthetic prices (test 2022), its CSV."""
    path = tmp_path_factory.mktemp("predict")
    csv = write_prices_csv(path / "prices.csv")
    run(compose_train(["data=csv", f"data.path={csv}", "data.horizon=3", "data.target_transform=diff",
                       "data.features=[High,Low]", *TINY], path / "run"))
    return path, csv


@pytest.mark.parametrize("transform", ["level", "diff", "log_return"])
def test_a_forecast_from_data_cut_at_a_day_is_the_test_prediction_made_that_day(transform, prices_csv, tmp_path):
    """Cut the data after a test day: predict's forecast must be eval's test-period forecast made on that day, the
    same prices for every step and the same conformal bands (same training split, same validation windows)."""
    path, csv = tmp_path, prices_csv
    run(compose_train(["data=csv", f"data.path={csv}", "data.horizon=3", f"data.target_transform={transform}",
                       *TINY], path / "run"))
    evaluate(compose_entry("eval", [f"ckpt_path={path / 'run'}", "data=csv", f"data.path={csv}"], tmp_path / "eval"))
    predictions = pd.read_csv(tmp_path / "eval" / "predictions.csv", parse_dates=["date"])
    prices = pd.read_csv(csv)
    cut = prices.index[prices["Date"] == "2022-06-15"][0]
    prices.iloc[: cut + 1].to_csv(tmp_path / "cut.csv", index=False)
    frame = predict(compose_entry("predict", [f"ckpt_path={path / 'run'}", "data=csv", f"data.path={tmp_path}/cut.csv",
                                              "calendar=null"], tmp_path / "predict"))
    made_then = predictions[predictions["date"] == pd.Timestamp("2022-06-16")].iloc[0]  # its first target day
    assert frame["date"].astype(str).tolist() == ["2022-06-16", "2022-06-17", "2022-06-20"]
    for step, suffix in enumerate(["", "_t+2", "_t+3"]):
        assert frame["forecast"][step] == pytest.approx(made_then[f"predicted{suffix}"], rel=1e-5)
        assert frame["upper_80"][step] == pytest.approx(made_then[f"upper_80{suffix}"], rel=1e-5)
        assert frame["lower_95"][step] == pytest.approx(made_then[f"lower_95{suffix}"], rel=1e-5)
    assert frame["persistence"][0] == made_then["persistence"]


def test_predict_without_a_training_split_still_forecasts_and_says_why_there_is_no_interval(trained, tmp_path):
    path, csv = trained
    prices = pd.read_csv(csv).iloc[-40:]  # 40 rows: a window of 10 is there, a training split is not
    prices.to_csv(tmp_path / "short.csv", index=False)
    overrides = [f"ckpt_path={path / 'run'}", "data=csv", f"data.path={tmp_path}/short.csv"]
    frame = predict(compose_entry("predict", overrides, tmp_path / "predict"))
    assert len(frame) == 3 and list(frame.columns) == ["date", "ticker", "step", "forecast", "persistence"]


@pytest.mark.parametrize("case", ["not_a_checkpoint", "missing_columns", "shorter_than_window", "export_format",
                                  "quantiles"])
def test_bad_input_is_one_line_naming_the_field_and_the_fix(trained, tmp_path, caplog, case):
    path, csv = trained
    ckpt = f"ckpt_path={path / 'run'}"
    if case == "not_a_checkpoint":
        task, cfg = predict, compose_entry("predict", [f"ckpt_path={csv}"], tmp_path / "out")
        error, message = CheckpointError, r"prices\.csv: not a checkpoint .*Fix: pass another ckpt_path"
    elif case == "missing_columns":
        pd.read_csv(csv).drop(columns=["Low"]).to_csv(tmp_path / "no_low.csv", index=False)
        task = predict
        cfg = compose_entry("predict", [ckpt, "data=csv", f"data.path={tmp_path}/no_low.csv"], tmp_path / "out")
        error, message = DataError, r"column\(s\) \['Low'\] not found .*trained on \['High', 'Low'\]\. Fix: data.path="
    elif case == "shorter_than_window":
        pd.read_csv(csv).iloc[:6].to_csv(tmp_path / "six.csv", index=False)
        task = predict
        cfg = compose_entry("predict", [ckpt, "data=csv", f"data.path={tmp_path}/six.csv"], tmp_path / "out")
        error, message = DataError, r"6 usable row\(s\) .* windows of data.window=10 .*Fix: data.path="
    elif case == "export_format":
        task, cfg = export, compose_entry("export", [ckpt, "format=tflite"], tmp_path / "out")
        error, message = ConfigError, r"format='tflite' is not an export format\. Fix: format=onnx or format=torch"
    else:
        task = run
        cfg = compose_train(["data=csv", f"data.path={csv}", *TINY, "model.quantiles=[0.9,0.5,0.1]"], tmp_path / "out")
        error, message = ConfigError, r"model.quantiles=\[0.9, 0.5, 0.1\] is not sorted.*=\[0.1, 0.5, 0.9\]"
    with pytest.raises(Exception) as raised:
        task(cfg)
    cause = user_error(raised.value)  # run() raises what Hydra's instantiate wrapped
    assert isinstance(cause, error) and re.search(message, str(cause)), cause
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_code:
        exit_on_user_error(task, cfg)  # what the entry points run: one line, exit status 1
    assert exit_code.value.code == 1
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 1 and "\n" not in lines[0] and lines[0].startswith(error.__name__)
    assert not (tmp_path / "out" / "forecast.csv").exists()


def test_a_multi_ticker_model_forecasts_each_ticker_with_its_own_scale_and_intervals(tmp_path):
    """AAA near $500, BBB near $25: one global model, one forecast per ticker, each in its own prices, each ticker's
    conformal intervals calibrated on its own validation windows (BBB's about 20 times narrower)."""
    csv = write_tickers_csv(tmp_path / "all_stocks.csv")
    data = ["data=csv", f"data.path={csv}", "data.tickers=all"]
    run(compose_train([*data, "data.horizon=2", "data.target_transform=log_return", *TINY], tmp_path / "run"))
    frame = predict(compose_entry("predict", [f"ckpt_path={tmp_path / 'run'}", *data], tmp_path / "predict"))
    assert frame["ticker"].tolist() == ["AAA", "AAA", "BBB", "BBB"]
    prices = pd.read_csv(csv)
    for ticker, rows in frame.groupby("ticker"):
        last = prices[prices["Name"] == ticker]["High"].iloc[-1]
        assert (rows["persistence"] == last).all()
        assert (rows["forecast"] - last).abs().max() < 0.2 * last  # a log-return model stays near its price
    width = (frame["upper_80"] - frame["lower_80"]).groupby(frame["ticker"]).mean()
    assert 8 < width["AAA"] / width["BBB"] < 50
