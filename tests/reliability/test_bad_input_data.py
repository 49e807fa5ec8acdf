"""Bad input data ends in documented handling with one counting warning, or a DataError naming file, field and fix."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_prices_csv

from lstm_zoo.data import DataError, StockDataModule
from lstm_zoo.evaluation.metrics import score
from lstm_zoo.evaluation.report import print_summary
from lstm_zoo.records import write_json


def setup(path: Path | None, **kwargs) -> tuple[StockDataModule, list[str]]:
    """A set-up data module on `path` (10-day windows) and the warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm = StockDataModule(path=str(path) if path else None, window=10, **kwargs)
        dm.setup()
    return dm, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def assert_finite(dm: StockDataModule) -> None:
    for name, ds in dm.datasets.items():
        for tensor in (ds.x, ds.y, ds.last):
            assert torch.isfinite(tensor).all(), f"non-finite values reach the {name} windows"


@pytest.fixture
def frame(tmp_path: Path) -> pd.DataFrame:
    """The synthetic prices as text, the way the module reads them."""
    return pd.read_csv(write_prices_csv(tmp_path / "clean.csv"), dtype=str)


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


# --- files that cannot be read ---------------------------------------------------------------------------------

def test_missing_file_names_the_path_and_the_field(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.path: no such file: .*nope\.csv.*Fix"):
        setup(tmp_path / "nope.csv")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "the file is empty"),
    (b"Date,Open,High\n", r"has a header \(Date, Open, High\) but no data rows"),
    (bytes(range(256)) * 20, "not a readable text CSV"),
])
def test_unreadable_files_say_what_is_wrong(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        setup(path)
    assert str(path) in str(err.value)


def test_wrong_delimiter_suggests_the_separator(tmp_path: Path, frame: pd.DataFrame) -> None:
    path = tmp_path / "semicolon.csv"
    frame.to_csv(path, index=False, sep=";")
    with pytest.raises(DataError, match=r"looks ';'-separated\. Fix: data\.sep=';'"):
        setup(path)
    dm, _ = setup(path, sep=";")  # and the suggested fix works
    assert len(dm.datasets["train"]) > 0


# --- columns -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "missing", "field"), [
    ({"date_column": "Day"}, "Day", "data.date_column"),
    ({"target": "Price"}, "Price", "data.target"),
    ({"features": ["High", "Adj Close"]}, "Adj Close", "data.features"),
])
def test_missing_column_lists_the_columns_that_exist(tmp_path: Path, frame: pd.DataFrame, kwargs: dict,
                                                     missing: str, field: str) -> None:
    with pytest.raises(DataError) as err:
        setup(write(frame, tmp_path / "p.csv"), **kwargs)
    message = str(err.value)
    assert repr(missing) in message and field in message and "Fix" in message
    assert "['Date', 'Open', 'High', 'Low', 'Close', 'Volume', 'Name']" in message


def test_date_column_under_another_name_works_once_named(tmp_path: Path, frame: pd.DataFrame) -> None:
    dm, notes = setup(write(frame.rename(columns={"Date": "timestamp"}), tmp_path / "p.csv"), date_column="timestamp")
    assert notes == [] and dm.datasets["test"].x.shape[1:] == (10, 1)


def test_embedded_data_missing_target_lists_its_columns() -> None:
    with pytest.raises(DataError, match=r"\['Price'\] not found; the file has \['Date', 'Open', 'High'"):
        setup(None, target="Price", features=["Price"])


# --- rows ------------------------------------------------------------------------------------------------------------

def test_tutorial_defects_are_dropped_with_one_counting_warning(tmp_path: Path) -> None:
    """The tutorial file's defects: empty Open/Low cells on one day and a trailing `-1,,,,,,` line."""
    path = write_prices_csv(tmp_path / "dirty.csv", dirty=True)
    with path.open("a") as f:
        f.write(",,,,,,\n")
    dm, notes = setup(path, features=["Open", "High", "Low"])
    assert len(notes) == 1
    assert "dropped 2 row(s) whose Date does not parse" in notes[0]
    assert "dropped 1 row(s) with empty, non-numeric or infinite values in ['Open', 'High', 'Low']" in notes[0]
    assert_finite(dm)
    clean, _ = setup(write_prices_csv(tmp_path / "clean.csv"), features=["Open", "High", "Low"])
    n = sum(len(d) for d in clean.datasets.values())
    assert sum(len(d) for d in dm.datasets.values()) == n - 1  # exactly the one empty-cell day is gone


def test_non_numeric_strings_and_inf_are_dropped_and_thousands_parsed(tmp_path: Path, frame: pd.DataFrame) -> None:
    frame.loc[5, "High"], frame.loc[6, "High"], frame.loc[7, "High"] = "N/A", "inf", "-inf"
    frame.loc[8, "High"] = "1,234.5"
    frame.loc[9, "Date"] = "not a date"
    dm, notes = setup(write(frame, tmp_path / "p.csv"))
    assert len(notes) == 1
    assert "read 1 value(s) of High with thousands separators" in notes[0]
    assert "dropped 1 row(s) whose Date does not parse (e.g. ['not a date'])" in notes[0]
    assert "dropped 3 row(s) with empty, non-numeric or infinite values in ['High']" in notes[0]
    assert_finite(dm)
    assert dm.scaling.scaler.data_max_[0] == 1234.5  # the thousands value counts at its real size


def test_unsorted_and_duplicate_dates_are_sorted_and_deduplicated(tmp_path: Path, frame: pd.DataFrame) -> None:
    reference, _ = setup(write(frame, tmp_path / "sorted.csv"))
    dm, notes = setup(write(pd.concat([frame.iloc[::-1], frame.iloc[[3, 4]]]), tmp_path / "messy.csv"))
    assert len(notes) == 1 and "sorted rows by date" in notes[0] and "kept the last of 2 duplicate" in notes[0]
    for stage in ("train", "val", "test"):
        assert torch.equal(dm.datasets[stage].x, reference.datasets[stage].x)


# --- splits ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"test_start": "2030-01-01"}, r"data\.test_start=2030-01-01 is after the last row: .* covers 2020-01-01"),
    ({"train_end": "2010-06-30", "test_start": "2022-01-01"}, r"data\.train_end=2010-06-30 is before the first row"),
    ({"train_end": "2022-01-01", "test_start": "2021-01-01"}, r"must be before data\.test_start"),
])
def test_split_dates_outside_the_data_fail_clearly(tmp_path: Path, frame: pd.DataFrame, kwargs, message) -> None:
    with pytest.raises(DataError, match=message + ".*Fix"):
        setup(write(frame, tmp_path / "p.csv"), **kwargs)


def test_embedded_data_split_outside_its_years_fails_clearly() -> None:
    with pytest.raises(DataError, match=r"data\.test_start=2020-01-01 is after the last row: bokeh_sampledata IBM "
                                        r"\(2000-03-01 to 2013-03-01\) covers 2000-03-01 to 2013-03-01"):
        setup(None, train_end="2019-12-31", test_start="2020-01-01")


def test_too_short_split_says_how_many_rows_and_how_many_needed(tmp_path: Path, frame: pd.DataFrame) -> None:
    with pytest.raises(DataError) as err:  # 2020-01-01..2020-01-10: 8 business days < window 10 + horizon 1
        setup(write(frame, tmp_path / "p.csv"), train_end="2020-01-10", test_start="2020-02-01")
    assert "training period has 8 usable rows but window + horizon = 11 are needed" in str(err.value)
    assert "Fix" in str(err.value)


# --- values ----------------------------------------------------------------------------------------------------------

def test_constant_training_series_is_refused(tmp_path: Path, frame: pd.DataFrame) -> None:
    frame["High"] = "5"
    with pytest.raises(DataError, match=r"\['High'\] are constant over the training period.*Fix"):
        setup(write(frame, tmp_path / "p.csv"))


def test_zero_prices_make_mape_undefined_and_keep_other_metrics(tmp_path: Path, capsys) -> None:
    metrics = score(pd.DataFrame({"actual": [0.0, 2.0, 4.0], "predicted": [1.0, 2.0, 1.0],
                                  "persistence": [1.0, 1.0, 1.0]}))
    assert np.isnan(metrics["mape"])
    assert metrics["mae"] == pytest.approx(4 / 3)
    assert metrics["rmse"] == pytest.approx(np.sqrt(10 / 3))
    write_json(tmp_path / "m.json", metrics)
    assert '"mape": null' in (tmp_path / "m.json").read_text()  # "undefined", and still valid JSON
    print_summary({f"test/{k}": v for k, v in metrics.items()})
    model = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("model"))
    assert model.split()[:4] == ["model", f"{np.sqrt(10 / 3):.3f}", "1.333", "n/a"]


def test_zero_prices_train_without_nan(tmp_path: Path, frame: pd.DataFrame) -> None:
    frame.loc[frame.index[-5:], "High"] = "0"  # e.g. a delisted stock: zero is a real (if odd) price
    dm, notes = setup(write(frame, tmp_path / "p.csv"))
    assert notes == []
    assert_finite(dm)


# --- several tickers -------------------------------------------------------------------------------------------------

def test_several_tickers_without_a_choice_lists_them(tmp_path: Path, frame: pd.DataFrame) -> None:
    path = write(pd.concat([frame, frame.assign(Name="AAPL"), frame.assign(Name="MSFT")]), tmp_path / "p.csv")
    with pytest.raises(DataError, match=r"column 'Name' holds 3 tickers \['AAPL', 'IBM', 'MSFT'\]\. "
                                        r"Fix: pick one with data\.ticker="):
        setup(path)
    dm, notes = setup(path, ticker="IBM")
    reference, _ = setup(write(frame, tmp_path / "ibm.csv"))
    assert notes == [] and torch.equal(dm.datasets["test"].x, reference.datasets["test"].x)
    with pytest.raises(DataError, match=r"data\.ticker='GOOG' not in column 'Name'"):
        setup(path, ticker="GOOG")


def test_duplicate_dates_keep_the_later_row_as_documented(frame: pd.DataFrame) -> None:
    from lstm_zoo.data import clean_prices

    later = frame.iloc[[3]].assign(High="500.0")
    with pytest.warns(UserWarning, match=r"kept the last of 1 duplicate date row\(s\) \(dates \['2020-01-06'\]\)"):
        clean = clean_prices(pd.concat([frame, later]), ["High"])
    assert clean.loc["2020-01-06", "High"] == 500.0 and clean.index.is_unique and len(clean) == len(frame)
