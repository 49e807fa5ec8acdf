"""Beating persistence honestly: target transforms, derived features without look-ahead, skill and Diebold-Mariano."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from scipy import stats
from torch import Tensor

from lstm_zoo.data import DataError, StockDataModule, add_derived_features, clean_prices
from lstm_zoo.evaluation.ensemble import ensemble_predictions
from lstm_zoo.evaluation.metrics import diebold_mariano, directional_accuracy, format_pvalue, score
from lstm_zoo.evaluation.predictions import predictions_frame
from lstm_zoo.models import Forecaster
from tests.helpers import FAST, ROOT, compose_train, run_main

TRANSFORMS = ["level", "diff", "log_return"]
ALL_DERIVED = ["range", "gap", "log_volume", "return"]


def scores_of_a_test_run(model: Forecaster, dm: StockDataModule) -> dict[str, float]:
    """Test `model` on `dm` and score its predictions frame, as the pipeline does."""
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, datamodule=dm, verbose=False)  # the toy models below return CPU tensors
    return score(predictions_frame(model.test_forecasts, dm.test_dates, dm.tickers)[0])


def small_dm(prices_csv: Path, transform: str, **kwargs) -> StockDataModule:
    dm = StockDataModule(path=str(prices_csv), target_transform=transform, window=10, **kwargs)
    dm.setup()
    return dm


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_perfect_prediction_round_trips_to_actual_prices(prices_csv: Path, transform: str) -> None:
    dm = small_dm(prices_csv, transform, horizon=3, features=["High", "range", "gap"])
    high = pd.read_csv(prices_csv, index_col="Date", parse_dates=True)["High"]
    dates = list(high.index)
    for split in ("test", "val"):
        ds = dm.datasets[split]
        first_dates = dm.test_dates if split == "test" else dm.val_dates
        rows = [dates.index(d) for d in first_dates[: len(ds)]]
        expected = np.stack([high.to_numpy()[[r + k for r in rows]] for k in range(3)], axis=1)  # (N, 3)
        np.testing.assert_allclose(dm.to_price(ds.y, ds.last).numpy(), expected, atol=2e-3)
        np.testing.assert_allclose(ds.last.numpy(), high.to_numpy()[[r - 1 for r in rows]], atol=1e-4)


@pytest.mark.parametrize("transform", ["diff", "log_return"])
def test_zero_change_output_is_exactly_persistence(prices_csv: Path, transform: str) -> None:
    dm = small_dm(prices_csv, transform, horizon=2)
    last = dm.datasets["test"].last
    forecast = dm.to_price(torch.zeros(len(last), 2), last)
    assert torch.equal(forecast, last.unsqueeze(1).expand(-1, 2))
    train_y = dm.datasets["train"].y
    assert abs(train_y[:, 0].std().item() - 1) < 0.1  # changes scaled by the training std, so about unit variance


def test_change_scale_is_fit_on_training_period_only(prices_csv: Path) -> None:
    dm = small_dm(prices_csv, "diff")
    high = pd.read_csv(prices_csv, index_col="Date", parse_dates=True)["High"]
    assert dm.scaling.change_scales["IBM"] == pytest.approx(float(np.std(np.diff(high[:"2021-12-31"].to_numpy()))))


class ZeroChange(Forecaster):
    """Predicts 'no change' whatever the input: in diff mode this is the persistence forecast."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.zeros(len(x), self.hparams.horizon)


def test_zero_change_model_scores_exactly_the_persistence_metrics(prices_csv: Path) -> None:
    dm = StockDataModule(path=str(prices_csv), target_transform="diff", window=10, features=["High", "Close"])
    m = scores_of_a_test_run(ZeroChange(n_features=2, horizon=1, window=10), dm)
    for key in ("rmse", "mae", "mape"):
        assert m[key] == m[f"persistence_{key}"]
    assert (m["skill"], m["dm_stat"], m["dm_pvalue"]) == (0.0, 0.0, 1.0)


def test_state_dict_restores_the_change_scaling(prices_csv: Path) -> None:
    dm = small_dm(prices_csv, "log_return", features=["High", "gap"])
    state = dm.state_dict()
    assert isinstance(state["change_scale"][0], float) and state["tickers"] == ["IBM"]
    assert state["target_transform"] == "log_return"
    fresh = StockDataModule(path=str(prices_csv), target_transform="log_return", window=10, features=["High", "gap"])
    fresh.load_state_dict(state)
    y, last = torch.randn(4, 1), torch.full((4,), 100.0)
    assert torch.equal(fresh.to_price(y, last), dm.to_price(y, last))
    wrong = StockDataModule(path=str(prices_csv), target_transform="diff", window=10, features=["High", "gap"])
    with pytest.raises(ValueError, match="target_transform=log_return"):
        wrong.load_state_dict(state)


def test_level_target_is_read_from_its_own_column_when_it_is_also_a_feature(prices_csv: Path) -> None:
    dm = small_dm(prices_csv, "level", features=["High", "Low", "Open", "Close"])
    ds = dm.datasets["test"]
    high = pd.read_csv(prices_csv, index_col="Date", parse_dates=True)["High"]
    np.testing.assert_allclose(dm.to_price(ds.y, ds.last)[:, 0].numpy(), high[dm.test_dates].to_numpy(), atol=1e-3)


def test_directional_accuracy_matches_hand_count() -> None:
    last = torch.tensor([10.0, 10.0, 10.0, 10.0, 10.0])
    actual = torch.tensor([[11.0], [9.0], [12.0], [10.0], [8.0]])  # up, down, up, flat (left out), down
    pred = torch.tensor([[10.5], [10.2], [9.0], [11.0], [9.5]])  # up (hit), up (miss), down (miss), -, down (hit)
    assert directional_accuracy(pred, actual, last) == 0.5
    assert directional_accuracy(last.unsqueeze(1), actual, last) == 0.0  # persistence predicts no direction


def test_diebold_mariano_matches_hand_computation_for_one_step() -> None:
    a = torch.tensor([[1.0], [2.0], [0.0], [1.0]])
    b = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    # d = a^2 - b^2 = [1, 3, -1, 1]: mean 1, variance (0 + 4 + 4 + 0) / 4 = 2, DM = 1 / sqrt(2 / 4) = sqrt(2),
    # HLN factor sqrt((4 + 1 - 2) / 4): statistic sqrt(1.5); p from Student's t with 3 degrees of freedom
    statistic, pvalue = diebold_mariano(a, b, horizon=1)
    assert statistic == pytest.approx(math.sqrt(1.5))
    assert pvalue == pytest.approx(2 * (1 - stats.t.cdf(math.sqrt(1.5), df=3)))
    assert diebold_mariano(b, a, horizon=1) == (pytest.approx(-statistic), pytest.approx(pvalue))


def test_diebold_mariano_uses_lag_autocovariances_and_hln_for_longer_horizons() -> None:
    r2, r3 = math.sqrt(2), math.sqrt(3)
    a = torch.tensor([[r2, r2], [r3, r3], [1.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [r2, r2]])
    # d = [2, 3, 1, -2]: mean 1, centred [1, 2, 0, -3], gamma0 = 14/4, gamma1 = (2 + 0 + 0)/4,
    # long-run variance 3.5 + 2 * 0.5 = 4.5, DM = 1 / sqrt(4.5 / 4); HLN sqrt((4 + 1 - 4 + 2/4) / 4) -> 1/sqrt(3)
    statistic, pvalue = diebold_mariano(a, b, horizon=2)
    assert statistic == pytest.approx(1 / r3)
    assert pvalue == pytest.approx(2 * stats.t.sf(1 / r3, df=3))
    assert diebold_mariano(b, a, horizon=2)[0] == pytest.approx(-statistic)


def test_diebold_mariano_falls_back_to_one_step_throughout_like_r_when_the_variance_is_not_positive() -> None:
    """R's forecast::dm.test redoes the whole test with h = 1, HLN factor included, when the long-run variance at
    h > 1 is not positive; d = [3, -1, 3, -1, 3, -1] has gamma0 = 4, gamma1 = -20/6, so 4 + 2 * gamma1 < 0."""
    r3 = math.sqrt(3)
    a = torch.tensor([[r3, r3], [0.0, 0.0]] * 3)
    b = torch.tensor([[0.0, 0.0], [1.0, 1.0]] * 3)
    # h = 1 by hand: mean 1, gamma0 = 4, DM = 1 / sqrt(4 / 6), HLN factor sqrt((6 + 1 - 2) / 6)
    expected = math.sqrt(6 / 4) * math.sqrt(5 / 6)
    statistic, pvalue = diebold_mariano(a, b, horizon=2)
    assert statistic == pytest.approx(expected) and pvalue == pytest.approx(2 * stats.t.sf(expected, df=5))
    assert (statistic, pvalue) == diebold_mariano(a, b, horizon=1)


def test_diebold_mariano_of_a_constant_loss_differential_is_defined() -> None:
    """One forecast better by the same amount every day: zero variance; the limit, not a ZeroDivisionError."""
    better, worse = torch.ones(20, 1), torch.full((20, 1), 2.0)
    assert diebold_mariano(better, worse) == (-math.inf, 0.0)
    assert diebold_mariano(worse, better, horizon=3) == (math.inf, 0.0)
    assert diebold_mariano(worse, worse) == (0.0, 1.0)
    assert format_pvalue(0.0) == "< 1e-300" and format_pvalue(1e-120) == "1e-120" and format_pvalue(0.013) == "0.013"


class ConstantLevel(Forecaster):
    """Predicts the same scaled level on every day (a bad, confidently wrong forecast)."""

    def __init__(self, level: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.level = level

    def forward(self, x: Tensor) -> Tensor:
        return torch.full((len(x), self.hparams.horizon), self.level)


def test_test_metrics_stay_float64_so_tiny_p_values_are_not_zero(prices_csv: Path) -> None:
    """Lightning logs float32: a Diebold-Mariano p-value below ~1e-45 would become 0; the scores stay float64."""
    dm = StockDataModule(path=str(prices_csv), window=10)
    model = ConstantLevel(level=-1.0, window=10)  # one training range below the minimum: far off every day
    metrics = scores_of_a_test_run(model, dm)
    p = metrics["dm_pvalue"]
    assert 0.0 < p < 1e-45 and torch.tensor(p, dtype=torch.float32).item() == 0.0
    collected = model.test_forecasts  # the frame holds exactly the collected float64 prices
    assert collected.pred.dtype == torch.float64
    persistence = collected.last.unsqueeze(1) - collected.actual
    assert (metrics["dm_stat"], p) == diebold_mariano(collected.pred - collected.actual, persistence)
    assert all(isinstance(v, float) for v in metrics.values())


def test_directional_accuracy_leaves_out_days_whose_price_did_not_change(tmp_path: Path) -> None:
    """Level targets: the actual price is the file's, not a float32 scaling round trip, so an unchanged day has
    no direction (it used to get a spurious one)."""
    dates = pd.bdate_range("2020-01-01", "2021-12-31")
    rng = np.random.default_rng(3)
    high = np.round(100 + np.cumsum(rng.normal(0, 1, len(dates))), 2)
    test = np.flatnonzero(dates >= "2021-01-01")
    flat = test[5:60:6]  # ten test days on which High repeats the day before
    high[flat] = high[flat - 1]
    path = tmp_path / "flat.csv"
    pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "High": high}).to_csv(path, index=False)
    dm = StockDataModule(path=str(path), window=10)
    metrics = scores_of_a_test_run(ConstantLevel(level=10.0, window=10), dm)  # far above every price: always "up"
    change = np.diff(high)[test - 1]  # each test day's change from the day before
    assert (change == 0).sum() >= 10
    assert metrics["directional_accuracy"] == pytest.approx((change > 0).sum() / (change != 0).sum())


@pytest.mark.parametrize(("transform", "growth"), [("diff", lambda t: 100 + 0.01 * t),
                                                   ("log_return", lambda t: 100 * 1.001**t)])
def test_a_zero_change_scale_is_a_data_error_naming_the_cause(tmp_path: Path, transform: str, growth) -> None:
    """Training prices that change by the same amount (diff) or ratio (log_return) every day: no change scale."""
    dates = pd.bdate_range("2020-01-01", "2021-12-31")
    high = growth(np.arange(len(dates), dtype=float))
    high[dates >= "2021-01-01"] += np.random.default_rng(0).normal(0, 1, (dates >= "2021-01-01").sum())
    path = tmp_path / "steady.csv"
    pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "High": high}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"one-day change of High .* is the same.*Fix: data.target_transform=level"):
        StockDataModule(path=str(path), window=10, target_transform=transform).setup()
    StockDataModule(path=str(path), window=10).setup()  # level targets need no change scale


def test_skill_is_zero_for_persistence_and_positive_for_a_better_forecast() -> None:
    last = np.array([100.0, 101.0, 99.0, 102.0, 100.0, 98.0])
    actual = np.array([101.0, 99.0, 102.0, 100.0, 98.0, 99.0])
    frame = pd.DataFrame({"actual": actual, "predicted": last, "persistence": last})
    assert score(frame)["skill"] == 0.0
    better = score(frame.assign(predicted=0.5 * (last + actual)))
    assert better["skill"] == pytest.approx(0.5) and better["dm_stat"] < 0 and better["directional_accuracy"] == 1.0


def test_derived_features_never_read_the_future(prices_csv: Path) -> None:
    raw = pd.read_csv(prices_csv, dtype=str)
    frame = clean_prices(raw, ["Open", "High", "Low", "Close", "Volume"])
    full = add_derived_features(frame, ALL_DERIVED)
    assert full.index[0] == frame.index[1]  # the first row has no previous close: dropped
    for day in range(1, 60):
        upto = add_derived_features(frame.iloc[: day + 1], ALL_DERIVED)
        pd.testing.assert_series_equal(upto.iloc[-1], full.loc[frame.index[day]])
    tampered = frame.copy()
    tampered.iloc[30:] *= 2  # a different future changes no feature of the days before it
    pd.testing.assert_frame_equal(add_derived_features(tampered, ALL_DERIVED).iloc[:29], full.iloc[:29])


def test_windows_end_the_day_before_the_predicted_day(prices_csv: Path) -> None:
    dm = small_dm(prices_csv, "diff", features=["High", *ALL_DERIVED])
    frame = dm.load_frames()["IBM"]
    ds = dm.datasets["test"]
    for i in (0, 7, len(ds) - 1):
        row = frame.index.get_loc(dm.test_dates[i])  # the first predicted day
        expected = dm.scaling.scaler.transform(frame.iloc[row - dm.window : row][dm.columns].to_numpy())
        np.testing.assert_allclose(ds.x[i].numpy(), expected, atol=1e-5)


def test_unknown_and_unavailable_derived_features_are_named(tmp_path: Path, prices_csv: Path) -> None:
    with pytest.raises(ValueError, match="rnage"):
        StockDataModule(path=str(prices_csv), features=["High", "rnage"]).setup()
    no_volume = tmp_path / "no_volume.csv"
    pd.read_csv(prices_csv).drop(columns="Volume").to_csv(no_volume, index=False)
    with pytest.raises(ValueError, match="log_volume.*Volume"):
        StockDataModule(path=str(no_volume), features=["High", "log_volume"]).setup()


def test_ensemble_averages_predictions_and_scores_them_like_a_run() -> None:
    base = pd.DataFrame({"date": ["2022-01-03", "2022-01-04", "2022-01-05"], "actual": [10.0, 12.0, 11.0],
                         "predicted": [9.0, 11.0, 12.0], "persistence": [9.5, 10.0, 12.0]})
    other = base.assign(predicted=[11.0, 13.0, 10.0])
    ensemble = ensemble_predictions([base, other])
    assert ensemble["predicted"].tolist() == [10.0, 12.0, 11.0]
    metrics = score(ensemble)
    assert metrics["rmse"] == 0.0 and metrics["skill"] == 1.0
    assert metrics["persistence_rmse"] == pytest.approx(math.sqrt((0.25 + 4 + 1) / 3))
    with pytest.raises(ValueError, match="other days"):
        ensemble_predictions([base, base.iloc[:2]])


def test_summary_prints_skill_and_dm_pvalue_beside_persistence(capsys: pytest.CaptureFixture) -> None:
    from lstm_zoo.evaluation.report import print_summary

    print_summary({"test/rmse": 1.5, "test/mae": 1.0, "test/mape": 0.7, "test/skill": -0.25,
                   "test/directional_accuracy": 0.48, "test/dm_stat": 2.5, "test/dm_pvalue": 0.013,
                   "test/persistence_rmse": 1.2, "test/persistence_mae": 0.9, "test/persistence_mape": 0.6})
    out = capsys.readouterr().out
    model = next(line for line in out.splitlines() if line.startswith("model"))
    assert model.split()[1:] == ["1.500", "1.000", "0.700", "-0.250", "0.480", "2.500", "0.013"]
    assert "does not beat persistence" in out and "p = 0.013" in out


@pytest.mark.parametrize("scheduler", ["reduce_on_plateau", "cosine"])
def test_scheduler_options_build_a_scheduler_stepped_on_val_loss(tmp_path: Path, scheduler: str) -> None:
    cfg = compose_train([f"scheduler={scheduler}", "model.hidden_size=4"], tmp_path)
    model = instantiate(cfg.model, n_features=1, horizon=1, window=5, _convert_="all")
    config = model.configure_optimizers()
    assert config["lr_scheduler"]["monitor"] == "val/loss"
    assert type(config["lr_scheduler"]["scheduler"]).__name__ == cfg.model.scheduler._target_.rsplit(".", 1)[1]


def test_defaults_keep_the_tutorial_schedule(tmp_path: Path) -> None:
    cfg = compose_train([], tmp_path)
    assert "scheduler" not in cfg.model and "early_stopping" not in cfg.callbacks
    assert cfg.trainer.max_epochs == 20 and cfg.data.target_transform == "level"
    stopping = compose_train(["callbacks=early_stopping", "callbacks.early_stopping.patience=3"], tmp_path)
    callback = instantiate(stopping.callbacks.early_stopping)
    assert isinstance(callback, L.pytorch.callbacks.EarlyStopping) and callback.patience == 3
    assert set(cfg.callbacks) < set(stopping.callbacks)


def test_beat_persistence_sweeps_transforms_features_models_and_three_seeds(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=beat_persistence"], return_hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)[0]
    assert len(jobs) == 3 * 2 * 3 * 3
    assert {"model=stacked", "model=gru", "model=attention", "seed=2", "data.target_transform=diff",
            "data.features=[High]"} <= {o for job in jobs for o in job}
    assert cfg.callbacks.early_stopping.patience > 0 and cfg.model.scheduler._target_.endswith("ReduceLROnPlateau")


@pytest.mark.slow
def test_beat_persistence_sweep_reports_skill_and_diebold_mariano(tmp_path: Path, prices_csv: Path) -> None:
    sweep = tmp_path / "sweep"
    overrides = ["experiment=beat_persistence", "data=csv", f"data.path={prices_csv}", "model=gru", "seed=0,1",
                 "data.target_transform=diff", "data.features=[High,range,gap]", *FAST, "model.num_layers=1",
                 "callbacks.early_stopping.patience=1", f"hydra.sweep.dir={sweep}"]
    run_main("train.py", ["-m", *overrides], check=True)
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 2
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        for key in ("test/skill", "test/directional_accuracy", "test/dm_stat", "test/dm_pvalue"):
            assert math.isfinite(metrics[key])
        assert metrics["test/skill"] == pytest.approx(1 - metrics["test/rmse"] / metrics["test/persistence_rmse"],
                                                      abs=1e-5)
    run_main("scripts/compare.py", [str(sweep)], check=True)
    ensembles = pd.read_csv(sweep / "leaderboard_ensembles.csv", index_col="model")
    assert ensembles.loc["gru", "runs"] == 2  # one configuration, its two seeds averaged
