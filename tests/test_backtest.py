"""Walk-forward folds and several tickers: fold boundaries, the purge gap, per-ticker scaling, per-fold refit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAST, compose_train, write_prices_csv, write_tickers_csv
from hydra.utils import instantiate

from lstm_zoo.data import DataError, StockDataModule
from lstm_zoo.data.sources import adjust_prices
from lstm_zoo.data.splits import WalkForward, single_split
from lstm_zoo.errors import user_error
from lstm_zoo.pipeline import run
from tests.helpers import PLOT

CALENDAR = pd.bdate_range("2010-01-01", "2020-06-30")


@pytest.fixture
def tickers_csv(tmp_path: Path) -> Path:
    """AAA near $500 and BBB near $25, business days 2015-2022."""
    return write_tickers_csv(tmp_path / "all_stocks.csv")


def setup_dm(path: Path, **kwargs) -> StockDataModule:
    dm = StockDataModule(path=str(path), **{"window": 10, "tickers": ["AAA", "BBB"], **kwargs})
    dm.setup()
    return dm


def high(path: Path, ticker: str) -> pd.Series:
    raw = pd.read_csv(path, parse_dates=["Date"])
    return raw[raw["Name"] == ticker].set_index("Date")["High"]


# --- folds on a calendar (pure) ------------------------------------------------------------------------------------

def test_folds_are_back_to_back_test_periods_ending_at_the_last_day() -> None:
    folds = WalkForward(n_folds=4).folds(CALENDAR)  # the data end on 2020-06-30: the last fold is half a year
    tested = [CALENDAR[(CALENDAR >= f.test_start) & (CALENDAR <= f.test_end)] for f in folds]
    union = tested[0].append(tested[1:])
    assert union.is_unique and union.equals(CALENDAR[CALENDAR.year >= 2017])
    assert [days.year.unique().tolist() for days in tested] == [[2017], [2018], [2019], [2020]]
    assert folds[-1].test_end == CALENDAR[-1]
    default = single_split(CALENDAR, None, None)  # the last fold tests what the default single split tests
    assert tested[-1].equals(CALENDAR[CALENDAR >= default.test_start]) and folds[-1].train_end <= default.train_end
    for fold in folds:  # expanding window, no gap: training runs from the first row to the day before the test
        assert fold.train_start is None
        assert fold.train_end == CALENDAR[CALENDAR.get_loc(fold.test_start) - 1]


def test_folds_ending_on_new_years_eve_are_calendar_years() -> None:
    folds = WalkForward(n_folds=3, end="2019-12-31").folds(CALENDAR)
    for fold, year in zip(folds, (2017, 2018, 2019)):
        days = CALENDAR[CALENDAR.year == year]
        assert (fold.test_start, fold.test_end, fold.train_end) == (days[0], days[-1], CALENDAR[CALENDAR.year <
                                                                                                  year][-1])


@pytest.mark.parametrize("gap_days", [0, 5])
def test_yearly_folds_test_calendar_years_also_when_the_data_end_before_new_years_eve(gap_days: int) -> None:
    """The tutorial's file ends on Friday 2017-12-29: every fold still tests Jan 1 to Dec 31, not Dec 30 to Dec 29,
    trains up to the purge before it, and a sliding window starts on a Jan 1 too."""
    calendar = pd.bdate_range("2006-01-03", "2017-12-29")
    folds = WalkForward(n_folds=4, gap_days=gap_days, train_years=3).folds(calendar)
    for fold, year in zip(folds, range(2014, 2018)):
        days = calendar[calendar.year == year]
        assert (fold.test_start, fold.test_end) == (days[0], days[-1])
        assert fold.train_end == calendar[calendar < days[0]][-1 - gap_days]  # no training target in the gap
        assert fold.train_start == calendar[calendar.year == year - 3][0]


def test_trading_day_folds_with_a_gap_and_a_sliding_window() -> None:
    for fold in WalkForward(n_folds=3, test_days=50, gap_days=7, train_years=2).folds(CALENDAR):
        assert len(CALENDAR[(CALENDAR >= fold.test_start) & (CALENDAR <= fold.test_end)]) == 50
        assert len(CALENDAR[(CALENDAR > fold.train_end) & (CALENDAR < fold.test_start)]) == 7  # the purge
        since = fold.train_end - pd.DateOffset(years=2)
        assert fold.train_start > since and CALENDAR[CALENDAR.get_loc(fold.train_start) - 1] <= since


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fold": 8}, r"backtest\.fold=8 is out of range: with backtest\.n_folds=8 it must be an integer in 0\.\.7\. "
                  r"Fix: 'backtest\.fold=range\(8\)'"),
    ({"fold": -1, "n_folds": 3}, r"backtest\.fold=-1 is out of range"),
    ({"n_folds": 0}, r"backtest\.n_folds=0 is out of range"),
    ({"n_folds": 12}, r"backtest\.n_folds=12 test periods of backtest\.test_years=1 ending 2020-06-30 run past the "
                      r"data .*Fix: backtest\.n_folds=10"),
    ({"n_folds": 2, "gap_days": 3000}, r"backtest\.gap_days=3000 is longer than fold 0's training period .*Fix: a "
                                       r"smaller backtest\.gap_days"),
    ({"end": "2030-01-01"}, r"backtest\.end=2030-01-01 is outside the data"),
])
def test_impossible_folds_name_the_field_and_the_fix(kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        WalkForward(**kwargs).folds(CALENDAR)


# --- several tickers -----------------------------------------------------------------------------------------------

def test_each_ticker_is_scaled_on_its_own_training_rows_and_no_window_spans_two(tickers_csv: Path) -> None:
    dm = setup_dm(tickers_csv)
    assert dm.tickers == ["AAA", "BBB"] and len(dm.datasets["test"]) == 2 * 260
    for i, name in enumerate(dm.tickers):
        prices = high(tickers_csv, name)
        train = prices[prices.index <= dm.period.train_end]
        scaler = dm.scaling.scalers[name]
        assert (scaler.data_min_[0], scaler.data_max_[0]) == (train.min(), train.max())
        scaled = scaler.transform(prices.to_numpy()[:, None])[:, 0]
        n_windows = 0
        for stage in ("train", "val", "test"):
            dataset, index = dm.datasets[stage], dm.windows[stage]
            mine = (dataset.ticker == i).numpy()
            assert (index["ticker"].to_numpy()[mine] == name).all() and mine.any()
            # every window is the 10 trading days of its own ticker right before its first target day
            rows = prices.index.get_indexer(index["date"][mine])
            np.testing.assert_allclose(dataset.x[mine][..., 0].numpy(), scaled[rows[:, None] - 10 + np.arange(10)],
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(dataset.last[mine].numpy(), prices.to_numpy()[rows - 1], rtol=1e-6)
            n_windows += int(mine.sum()) * (stage != "test")
        assert n_windows == len(train) - 10  # window 10, horizon 1: no window crosses into the other ticker
    assert dm.datasets["train"].x.max() <= 1 and dm.datasets["train"].x.min() >= 0  # $500 and $25 alike


def test_another_tickers_prices_leave_this_tickers_windows_unchanged(tickers_csv: Path, tmp_path: Path) -> None:
    frame = pd.read_csv(tickers_csv)
    bbb = frame["Name"] == "BBB"
    frame.loc[bbb, "High"] *= np.random.default_rng(1).uniform(0.9, 1.1, int(bbb.sum()))
    frame.to_csv(tmp_path / "changed.csv", index=False)
    a, b = setup_dm(tickers_csv, target_transform="diff"), setup_dm(tmp_path / "changed.csv", target_transform="diff")
    for stage in ("train", "val", "test"):
        aaa = (a.datasets[stage].ticker == 0).numpy()
        for field in ("x", "y", "last"):
            assert torch.equal(getattr(a.datasets[stage], field)[aaa], getattr(b.datasets[stage], field)[aaa])
        assert not torch.equal(a.datasets[stage].y[~aaa], b.datasets[stage].y[~aaa])
    assert a.scaling.change_scales["AAA"] == b.scaling.change_scales["AAA"] != b.scaling.change_scales["BBB"]


def test_ticker_selection(tickers_csv: Path, prices_csv: Path) -> None:
    assert setup_dm(tickers_csv, tickers="all").tickers == ["AAA", "BBB"]
    one = setup_dm(tickers_csv, tickers=None, ticker="BBB")  # the single data.ticker keeps working
    assert one.tickers == ["BBB"] and torch.equal(one.datasets["test"].x, setup_dm(tickers_csv, tickers=["BBB"])
                                                  .datasets["test"].x)
    with pytest.raises(DataError, match=r"data\.tickers: \['KO'\] not in column 'Name', which holds \['AAA', 'BBB'\]"
                                        r"\. Fix: data\.tickers=\[AAA,BBB\]"):
        setup_dm(tickers_csv, tickers=["AAA", "KO"])
    with pytest.raises(DataError, match=r"data\.ticker='AAA' and data\.tickers=\['AAA'\] are both set"):
        setup_dm(tickers_csv, tickers=["AAA"], ticker="AAA")
    no_names = prices_csv.with_name("no_names.csv")
    pd.read_csv(prices_csv).drop(columns="Name").to_csv(no_names, index=False)
    with pytest.raises(DataError, match=r"data\.tickers=\['AAA'\] was given but the file has no .* Fix: "
                                        r"data\.tickers=null"):
        setup_dm(no_names, tickers=["AAA"])


def test_split_dates_and_folds_together_are_refused(tickers_csv: Path) -> None:
    with pytest.raises(DataError, match=r"data\.train_end=2019-12-31 / data\.test_start=None and backtest both set "
                                        r"the split\. Fix: data\.train_end=null data\.test_start=null"):
        setup_dm(tickers_csv, train_end="2019-12-31", backtest=WalkForward())


def test_the_checkpoint_state_restores_every_tickers_scaling(tickers_csv: Path) -> None:
    dm = setup_dm(tickers_csv, target_transform="diff")
    state = dm.state_dict()
    assert state["tickers"] == ["AAA", "BBB"] and len(state["data_min"]) == 2 and len(state["change_scale"]) == 2
    fresh = StockDataModule(path=str(tickers_csv), window=10, tickers=["BBB"], target_transform="diff")
    fresh.load_state_dict(state)  # eval.py: the training scaling, here for a subset of the tickers
    fresh.setup()
    assert fresh.scaling.change_scales["BBB"] == dm.scaling.change_scales["BBB"]
    bbb = (dm.datasets["test"].ticker == 1).numpy()
    assert torch.equal(fresh.datasets["test"].x, dm.datasets["test"].x[bbb])
    y, last = torch.randn(5, 1), torch.full((5,), 20.0, dtype=torch.float64)
    assert torch.equal(fresh.to_price(y, last), dm.to_price(y, last, torch.ones(5, dtype=torch.long)))
    other = StockDataModule(path=str(tickers_csv), window=10, tickers=["AAA", "BBB"], target_transform="diff")
    other.load_state_dict({**state, "tickers": ["AAA", "CCC"]})
    with pytest.raises(DataError, match=r"trained on tickers \['AAA', 'CCC'\] but the data gives \['AAA', 'BBB'\]"):
        other.setup()


def test_adjusted_prices_remove_a_split() -> None:
    frame = pd.DataFrame({"High": [102.0, 101.0, 51.0, 52.0], "Close": [100.0, 100.0, 50.0, 51.0],
                          "Adj Close": [50.0, 50.0, 50.0, 51.0], "Volume": [10.0, 10.0, 20.0, 20.0]})
    adjusted = adjust_prices(frame)  # a 2:1 split before the third day
    assert adjusted["Close"].tolist() == [50.0, 50.0, 50.0, 51.0] and adjusted["High"].tolist()[:3] == [51, 50.5, 51]
    assert adjusted["Volume"].tolist() == [20.0, 20.0, 20.0, 20.0]


# --- the split: gap, folds, refit ----------------------------------------------------------------------------------

def test_a_gap_after_train_end_purges_training_targets_and_test_windows_read_the_days_before(prices_csv) -> None:
    dm = StockDataModule(path=str(prices_csv), window=10, horizon=3, train_end="2021-06-30", test_start="2022-01-01")
    dm.setup()
    for stage in ("train", "val"):
        assert dm.windows[stage]["end"].max() <= pd.Timestamp("2021-06-30")  # no target inside the gap
    prices = high(prices_csv, "IBM")
    rows = prices.index.get_indexer(dm.test_dates)
    assert dm.test_dates[0] == pd.Timestamp("2022-01-03")
    # persistence and every window use the trading day right before each test day, not the last training day
    np.testing.assert_allclose(dm.datasets["test"].last.numpy(), prices.to_numpy()[rows - 1], rtol=1e-6)
    first_window = dm.scaling.scaler.inverse_transform(dm.datasets["test"].x[0].numpy())[:, 0]
    np.testing.assert_allclose(first_window, prices[:"2021-12-31"].iloc[-10:].to_numpy(), rtol=1e-5)  # gap days


def test_every_test_day_is_in_exactly_one_fold_and_no_target_reaches_the_gap(tickers_csv: Path) -> None:
    seen = []
    for k in range(3):
        dm = setup_dm(tickers_csv, horizon=2, backtest=WalkForward(fold=k, n_folds=3, gap_days=5))
        period, calendar = dm.period, high(tickers_csv, "AAA").index
        assert len(calendar[(calendar > period.train_end) & (calendar < period.test_start)]) == 5
        for stage in ("train", "val"):  # targets stop before the gap, so before the first test day
            assert dm.windows[stage]["end"].max() <= period.train_end
        test = dm.windows["test"]
        assert test["date"].between(period.test_start, period.test_end).all()
        seen.append(test.assign(fold=k))
    tested = pd.concat(seen)
    assert not tested.duplicated(["ticker", "date"]).any()
    for name in ("AAA", "BBB"):
        days = high(tickers_csv, name).index
        expected = days[(days >= seen[0]["date"].min())][:-1]  # horizon 2: the last day has no second target
        assert list(tested.loc[tested["ticker"] == name, "date"]) == list(expected)


def test_every_fold_fits_its_scaling_on_its_own_training_period(tickers_csv: Path) -> None:
    for k in (0, 2):
        dm = setup_dm(tickers_csv, target_transform="diff", backtest=WalkForward(fold=k, n_folds=3))
        for name in dm.tickers:
            train = high(tickers_csv, name)[: dm.period.train_end]
            assert dm.scaling.scalers[name].data_max_[0] == train.max()
            assert dm.scaling.change_scales[name] == pytest.approx(float(np.std(np.diff(train.to_numpy()))), rel=1e-12)


def fold_cfg(path: Path, out: Path, *overrides: str):
    return compose_train(["data=csv", f"data.path={path}", "data.tickers=[AAA,BBB]", "backtest=walk_forward",
                          "backtest.n_folds=3", "model=vanilla", *FAST, *overrides], out)


def test_changing_only_fold_ks_test_prices_leaves_fold_ks_training_bit_identical(tickers_csv, tmp_path) -> None:
    """Per-fold refit: the scaler, change scale, validation split, early stopping and checkpoint choice of fold 1
    see only fold 1's training period, so new test prices change its forecasts and nothing it learned."""
    period = setup_dm(tickers_csv, backtest=WalkForward(fold=1, n_folds=3)).period
    frame = pd.read_csv(tickers_csv, parse_dates=["Date"])
    tested = frame["Date"].between(period.test_start, period.test_end)
    frame.loc[tested, ["Open", "High", "Low", "Close"]] *= 1.3
    frame.to_csv(tmp_path / "changed.csv", index=False, date_format="%Y-%m-%d")
    overrides = ("backtest.fold=1", "data.target_transform=diff", "callbacks=early_stopping",
                 "callbacks.early_stopping.patience=1", "trainer.max_epochs=3", PLOT)
    runs = [tmp_path / "original", tmp_path / "changed"]
    metrics = [run(fold_cfg(path, out, *overrides)) for path, out in zip((tickers_csv, tmp_path / "changed.csv"), runs)]
    weights = [torch.load(m["best_checkpoint"], weights_only=True)["state_dict"] for m in metrics]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert Path(metrics[0]["best_checkpoint"]).name == Path(metrics[1]["best_checkpoint"]).name
    assert metrics[0]["val/rmse"] == metrics[1]["val/rmse"] and metrics[0]["epochs"] == metrics[1]["epochs"]
    assert metrics[0]["test/AAA/rmse"] != metrics[1]["test/AAA/rmse"]

    # the global model's outputs: metrics per ticker and pooled, predictions with a ticker column, one plot
    saved = json.loads((runs[0] / "metrics.json").read_text())
    assert saved["status"] == "completed" and saved["tickers"] == ["AAA", "BBB"] and saved["fold"] == 1
    assert (saved["test_start"], saved["test_end"]) == (str(period.test_start.date()), str(period.test_end.date()))
    predictions = pd.read_csv(runs[0] / "predictions.csv")
    assert list(predictions["ticker"].unique()) == ["AAA", "BBB"]
    for name, part in predictions.groupby("ticker"):
        rmse = float(np.sqrt(((part["predicted"] - part["actual"]) ** 2).mean()))
        assert saved[f"test/{name}/rmse"] == pytest.approx(rmse, rel=1e-12)
        persistence = float(np.sqrt(((part["persistence"] - part["actual"]) ** 2).mean()))
        assert saved[f"test/{name}/skill"] == pytest.approx(1 - rmse / persistence, rel=1e-12)
    for key in ("rel_mse", "skill", "dm_pvalue", "directional_accuracy"):
        assert np.isfinite(saved[f"test/pooled/{key}"])
    assert (runs[0] / "forecast.png").stat().st_size > 10_000


def short_ticker_csv(tmp_path: Path) -> Path:
    """AAA and BBB from 2015, CCC listed only in 2021."""
    path = write_tickers_csv(tmp_path / "all_stocks.csv")
    late = write_tickers_csv(tmp_path / "late.csv", {"CCC": 40.0}, start="2021-06-01")
    pd.concat([pd.read_csv(path), pd.read_csv(late)]).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.tickers=[AAA,KO]"], r"data\.tickers: \['KO'\] not in column 'Name'"),
    (["data.tickers=[AAA,CCC]"], r"\[CCC\], fold 0 \(test 2020-01-01 to 2020-12-31\): the training period has 0 "
                                 r"usable rows but window \+ horizon = 11 are needed\. Fix: .*drop CCC from "
                                 r"data\.tickers"),
    (["data.window=400", "backtest.n_folds=7"], r"\[AAA\], fold 0 .*: the training period has 26[0-9] usable rows but"
                                                r" window \+ horizon = 401 are needed\. Fix: a smaller data\.window"),
    (["backtest.n_folds=9"], r"backtest\.n_folds=9 test periods .* run past the data .*Fix: backtest\.n_folds=7"),
    (["backtest.gap_days=2000"], r"backtest\.gap_days=2000 is longer than fold 0's training period"),
    (["backtest.fold=3"], r"backtest\.fold=3 is out of range: with backtest\.n_folds=3"),
])
def test_bad_backtests_fail_with_one_line_naming_the_field_and_nothing_completed(tmp_path: Path, overrides: list,
                                                                                 message: str) -> None:
    path = short_ticker_csv(tmp_path)
    with pytest.raises(Exception) as raised:
        run(fold_cfg(path, tmp_path / "run", *overrides))
    cause = user_error(raised.value)  # train.py prints it as one [ERROR] line and exits 1
    assert isinstance(cause, DataError) and "\n" not in str(cause) and re.search(message, str(cause)), str(cause)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["status"] == "failed" and saved["error"] == f"DataError: {cause}"


def test_backtest_config_sets_the_split_and_instantiates_the_folds(tmp_path: Path) -> None:
    cfg = compose_train(["data=stocks", "backtest=walk_forward", "backtest.fold=2"], tmp_path)
    assert cfg.data.train_end is None and cfg.data.test_start is None and list(cfg.data.tickers) == ["AAPL", "GOOG",
                                                                                                    "IBM", "MSFT"]
    dm = instantiate(cfg.data, backtest=cfg.backtest)
    assert dm.backtest == WalkForward(fold=2) and dm.adjust
    assert compose_train([], tmp_path).get("backtest") is None  # the default job: one split


def test_the_embedded_stocks_are_four_tickers_on_one_calendar() -> None:
    dm = StockDataModule(tickers=["AAPL", "GOOG", "IBM", "MSFT"], adjust=True,
                         backtest=WalkForward(fold=0, n_folds=8, end="2012-12-31"))
    dm.setup()
    assert dm.tickers == ["AAPL", "GOOG", "IBM", "MSFT"]
    assert dm.windows["test"]["date"].min() == pd.Timestamp("2005-01-03")
    assert dm.windows["test"]["date"].max() == pd.Timestamp("2005-12-30")
    assert dm.windows["train"].groupby("ticker")["date"].min()["GOOG"] > pd.Timestamp("2004-08-19")


def test_a_single_series_is_named_by_its_ticker_column_or_its_file(tmp_path: Path) -> None:
    path = write_prices_csv(tmp_path / "p.csv", name="XYZ")
    pd.read_csv(path).drop(columns="Name").to_csv(tmp_path / "unnamed.csv", index=False)
    for csv, name in ((path, "XYZ"), (tmp_path / "unnamed.csv", "unnamed")):
        dm = StockDataModule(path=str(csv), window=10)
        dm.setup()
        assert dm.tickers == [name] and (dm.datasets["test"].ticker == 0).all()


def with_untickered_rows(path: Path) -> Path:
    """The all_stocks files' end: rows whose Name is empty (two with prices, one `-1,,,,,,`)."""
    with path.open("a") as f:
        f.write("2022-12-30,1,2,0.5,1,100,\n2023-01-03,1,2,0.5,1,100,\n-1,,,,,,\n")
    return path


def test_rows_without_a_ticker_are_dropped_and_counted_in_the_one_warning(tmp_path: Path) -> None:
    csv = with_untickered_rows(write_tickers_csv(tmp_path / "all_stocks.csv", {"AAA": 500.0, "BBB": 25.0}))
    with pytest.warns(UserWarning) as record:
        dm = setup_dm(csv)
    assert [str(w.message) for w in record] == [f"{csv}: dropped 3 row(s) with an empty Name (no ticker)."]
    assert dm.tickers == ["AAA", "BBB"] and dm.windows["test"]["date"].max() == pd.Timestamp("2022-12-30")
    for name in ("AAA", "BBB"):  # each ticker's rows exactly, nothing of the untickered ones
        with pytest.warns(UserWarning, match="dropped 3 row"):
            alone = setup_dm(csv, tickers=[name])
        assert torch.equal(alone.datasets["test"].actual,
                           dm.datasets["test"].actual[dm.datasets["test"].ticker == ["AAA", "BBB"].index(name)])
    with pytest.warns(UserWarning, match=r"dropped 3 row\(s\) with an empty Name \(no ticker\)"):
        assert setup_dm(csv, tickers=None, ticker="BBB").tickers == ["BBB"]


def test_a_multi_ticker_file_of_the_tutorials_family_trains_on_two_of_its_tickers(tmp_path: Path, caplog,
                                                                                   recwarn) -> None:
    """The issue's done-when: data.tickers=[AAPL,KO] on an all_stocks-like file with its empty-Name rows."""
    csv = with_untickered_rows(write_tickers_csv(tmp_path / "all_stocks.csv", {"AAPL": 150.0, "IBM": 140.0,
                                                                               "KO": 45.0}, start="2019-01-01"))
    cfg = compose_train(["data=csv", f"data.path={csv}", "data.tickers=[AAPL,KO]", *FAST], tmp_path / "run")
    metrics = run(cfg)
    assert metrics["status"] == "completed" and np.isfinite(metrics["test/rmse"])
    warned = [str(w.message) for w in recwarn] + [r.getMessage() for r in caplog.records if r.name == "py.warnings"]
    about_the_file = [message for message in warned if str(csv) in message]  # a run may route warnings to its log
    assert len(about_the_file) == 1 and f"{csv}: dropped 3 row(s) with an empty Name (no ticker)." in about_the_file[0]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["tickers"] == ["AAPL", "KO"]
