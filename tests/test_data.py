"""StockDataModule: windows, date split, train-only scaling, the tutorial's test windows, dirty rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import compose_train, write_prices_csv
from hydra.utils import instantiate

from lstm_zoo.data import DataError, StockDataModule, make_windows
from lstm_zoo.data.splits import untrained_windows


def datamodule(path, **kwargs) -> StockDataModule:
    dm = StockDataModule(path=str(path), **{"window": 10, **kwargs})
    dm.setup("fit")
    return dm


def test_windows_equal_a_plain_loop_reference():
    series = torch.arange(40, dtype=torch.float32).reshape(20, 2)
    target = series[:, 1] * 10
    x, y = make_windows(series, target, window=5, horizon=3)
    assert x.shape == (20 - 5 - 3 + 1, 5, 2) and y.shape == (13, 3)
    for i in range(len(x)):
        assert torch.equal(x[i], series[i : i + 5])
        assert torch.equal(y[i], target[i + 5 : i + 8])
    assert x.untyped_storage().data_ptr() == series.untyped_storage().data_ptr()  # a view, not a copy


def test_split_defaults_to_the_last_calendar_year_like_the_tutorial(prices_csv):
    dm = datamodule(prices_csv)
    assert dm.test_dates[0] == pd.Timestamp("2022-01-03")  # first business day of the last year
    assert dm.test_dates[-1] == pd.Timestamp("2022-12-30")
    assert dm.val_dates[-1] < pd.Timestamp("2022-01-01")


def test_every_test_day_gets_one_prediction_and_windows_start_with_the_last_training_days(prices_csv):
    dm = datamodule(prices_csv, window=10)
    raw = pd.read_csv(prices_csv, parse_dates=["Date"]).set_index("Date")["High"]
    test_days = raw[raw.index >= "2022-01-01"]
    assert len(dm.datasets["test"]) == len(test_days)
    assert list(dm.test_dates) == list(test_days.index)
    x, _, last, actual = dm.datasets["test"][[0]][:4]
    prices = dm.scaling.scaler.inverse_transform(x[0].numpy())[:, 0]
    np.testing.assert_allclose(prices, raw[raw.index < "2022-01-01"].iloc[-10:].to_numpy(), rtol=1e-5)
    assert last.item() == raw[raw.index < "2022-01-01"].iloc[-1]  # the true price, float64, no scaling round trip
    assert actual.item() == test_days.iloc[0] and actual.dtype == last.dtype == torch.float64


def test_scaler_is_fit_on_the_training_period_only(tmp_path, prices_csv):
    frame = pd.read_csv(prices_csv)
    frame.loc[frame["Date"] >= "2022-01-01", "High"] *= 10  # test period far outside the training range
    changed = tmp_path / "changed.csv"
    frame.to_csv(changed, index=False)
    a, b = datamodule(prices_csv), datamodule(changed)
    assert torch.equal(a.datasets["train"].x, b.datasets["train"].x)
    assert torch.equal(a.datasets["val"].y, b.datasets["val"].y)
    assert a.datasets["train"].x.max() <= 1 and b.datasets["test"].y.max() > 1  # test can exceed [0, 1]


def test_validation_is_the_chronological_end_of_the_training_windows(prices_csv):
    dm = datamodule(prices_csv, val_fraction=0.2)
    n_train, n_val = len(dm.datasets["train"]), len(dm.datasets["val"])
    assert n_val == round((n_train + n_val) * 0.2)
    assert torch.equal(dm.datasets["train"].y[-1, 0], dm.datasets["val"].x[0, -1, 0])  # consecutive days


def test_to_price_inverts_the_target_scaling(prices_csv):
    dm = datamodule(prices_csv, features=["Open", "Close"], target="High", horizon=3)
    _, y, last, _ = dm.datasets["test"][[0, 1]][:4]
    raw = pd.read_csv(prices_csv, parse_dates=["Date"]).set_index("Date")["High"]
    expected = raw[raw.index >= "2022-01-01"].iloc[:4].to_numpy()
    np.testing.assert_allclose(dm.to_price(y, last)[0].numpy(), expected[:3], rtol=1e-5)
    np.testing.assert_allclose(dm.to_price(y, last)[1].numpy(), expected[1:4], rtol=1e-5)
    assert dm.n_features == 2 and dm.datasets["test"].x.shape[-1] == 2


def test_tutorial_dirty_rows_are_dropped_with_one_warning(tmp_path):
    path = write_prices_csv(tmp_path / "dirty.csv", dirty=True)
    with pytest.warns(UserWarning, match=r"dropped 1 row\(s\) whose Date does not parse") as record:
        dm = datamodule(path, features=["Open", "High"])
    assert len(record) == 1 and "dropped 1 row(s) with empty" in str(record[0].message)
    assert not torch.isnan(dm.datasets["train"].x).any()


def test_the_embedded_ibm_data_splits_at_2012():
    dm = instantiate(compose_train().data)
    dm.setup("fit")
    assert dm.test_dates[0] == pd.Timestamp("2012-01-03") and dm.test_dates[-1] == pd.Timestamp("2013-03-01")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) > 2500


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "Adj"}, r"column\(s\) \['Adj'\] not found; the file has \['Date', 'Open'"),
        ({"date_column": "Day"}, r"Fix: set data.date_column"),
        ({"window": 600}, r"training period has 523 usable rows but window \+ horizon = 601 are needed"),
        ({"test_start": "2030-01-01"}, r"data.test_start=2030-01-01 is after the last row"),
        ({"train_end": "2022-06-01", "test_start": "2022-01-01"}, r"must be before data.test_start"),
    ],
)
def test_bad_inputs_raise_errors_that_name_the_field(prices_csv, kwargs, message):
    with pytest.raises(DataError, match=message):
        datamodule(prices_csv, **kwargs)


def test_a_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match=r"no such file: .*nope.csv"):
        datamodule(tmp_path / "nope.csv")


# --- date formats --------------------------------------------------------------------------------------------------

def rewrite_dates(iso: Path, path: Path, date_format: str) -> Path:
    """`iso` (a write_prices_csv file) with its dates written in `date_format`."""
    frame = pd.read_csv(iso, dtype=str)
    frame["Date"] = pd.to_datetime(frame["Date"], format="%Y-%m-%d").dt.strftime(date_format)
    frame.to_csv(path, index=False)
    return path


def test_day_first_dates_are_refused_by_default_and_read_right_with_data_date_format(tmp_path, prices_csv):
    day_first = rewrite_dates(prices_csv, tmp_path / "day_first.csv", "%d/%m/%Y")
    with pytest.raises(DataError) as err:
        StockDataModule(path=str(day_first)).load_frames()
    message = str(err.value)
    assert message.startswith(f"{day_first}: column 'Date' holds day-first dates (e.g. '13/01/2020')")
    assert message.endswith("Fix: data.date_format='%d/%m/%Y'") and "\n" not in message
    cfg = compose_train(["data=csv", f"data.path={day_first}", "data.date_format=%d/%m/%Y"], tmp_path / "run")
    read = instantiate(cfg.data).load_frames()  # the override as the error writes it, once the shell drops the quotes
    pd.testing.assert_frame_equal(read["IBM"], StockDataModule(path=str(prices_csv)).load_frames()["IBM"])


@pytest.mark.parametrize(("date_format", "end", "message"), [
    ("%m/%d/%Y", "2022-12-31", r"holds month-first dates \(e.g. '01/13/2020'\).*Fix: data.date_format='%m/%d/%Y'$"),
    ("%d.%m.%y", "2022-12-31", r"holds day-first dates \(e.g. '13.01.20'\).*Fix: data.date_format='%d.%m.%y'$"),
    ("%d/%m/%Y", "2020-01-10", r"holds dates whose day/month order is ambiguous \(e.g. '01/01/2020'\).*Fix: "
                               r"data.date_format='%d/%m/%Y' \(day first\) or data.date_format='%m/%d/%Y'"),
])
def test_every_numeric_day_month_order_needs_data_date_format(tmp_path, date_format, end, message):
    iso = write_prices_csv(tmp_path / "iso.csv", start="2020-01-01", end=end)
    with pytest.raises(DataError, match=message):
        StockDataModule(path=str(rewrite_dates(iso, tmp_path / "dates.csv", date_format))).load_frames()


def test_a_date_format_that_fits_few_rows_is_an_error_not_a_warning(tmp_path, prices_csv):
    day_first = rewrite_dates(prices_csv, tmp_path / "day_first.csv", "%d/%m/%Y")
    days = pd.bdate_range("2020-01-01", "2022-12-31")  # prices_csv's: the days above 12 do not parse month-first
    with pytest.raises(DataError, match=rf"{(days.day > 12).sum()} of {len(days)} value\(s\) of column 'Date' do not "
                                        r"parse with data.date_format='%m/%d/%Y' .*Fix: data.date_format=<their"):
        StockDataModule(path=str(day_first), date_format="%m/%d/%Y").load_frames()


def test_calibration_keeps_the_validation_windows_after_each_tickers_last_training_window() -> None:
    """eval/predict on a checkpoint: conformal intervals calibrate only on windows the model never trained on; a
    ticker it did not train on counts from its last training window of any ticker."""
    windows = pd.DataFrame({"ticker": ["A"] * 3 + ["B"] * 3, "date": pd.date_range("2020-01-01", periods=6)})
    keep, note = untrained_windows(windows, {"A": "2020-01-02", "B": "2020-01-05"}, "prices.csv")
    assert keep.tolist() == [False, False, True, False, False, True]
    assert note == "2 of 6 validation windows: the model trained on the others"
    assert untrained_windows(windows, {"A": "2020-01-02"}, "prices.csv")[0].tolist() == [False, False] + [True] * 4
    keep, note = untrained_windows(windows, {"A": "2020-01-06"}, "prices.csv")
    assert not keep.any() and note.startswith("none: the model trained on all 6 validation windows of prices.csv")
    keep, note = untrained_windows(windows, {}, "prices.csv")  # nothing recorded: every window, no note
    assert keep.all() and note is None
