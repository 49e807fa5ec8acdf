"""Prediction intervals: split-conformal coverage, the quantile head of every model, pinball loss and CRPS."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy import stats

from lstm_zoo.errors import ConfigError
from lstm_zoo.evaluation.intervals import (
    central_intervals,
    check_quantiles,
    conformal_forecast,
    conformal_radius,
    crps_from_quantiles,
    interval_metrics,
    pinball_loss,
)
from lstm_zoo.evaluation.leaderboard import compare
from lstm_zoo.forecasting import predict
from lstm_zoo.models import RNNForecaster
from lstm_zoo.pipeline import run
from tests.helpers import CONF, FAST, compose_entry, compose_train, model_fields, trained_models

MODELS = trained_models()  # the models fit in closed form have tests of their own (test_baselines.py)

QUANTILES = [0.1, 0.5, 0.9]


def test_conformal_coverage_is_the_nominal_level_within_sampling_error():
    """Known noise, 2000 independent replications (the columns): the mean coverage of split-conformal intervals is
    exactly k / (n + 1), k = ceil((n + 1) level) (finite-sample validity), and its spread is the Beta law's."""
    generator = torch.Generator().manual_seed(0)
    n, m, replications = 200, 1000, 2000
    calibration = 3.0 * torch.randn(n, replications, generator=generator, dtype=torch.float64)
    future = 3.0 * torch.randn(m, replications, generator=generator, dtype=torch.float64)
    for level in (0.8, 0.95):
        radius = conformal_radius(calibration, level)  # (replications,)
        coverage = (future.abs() <= radius).double().mean(0)
        k = math.ceil((n + 1) * level)
        expected = k / (n + 1)
        beta = stats.beta(k, n + 1 - k)  # the law of the coverage given the calibration set
        spread = math.sqrt(beta.var() + expected * (1 - expected) / m)
        assert abs(coverage.mean().item() - expected) < 4 * spread / math.sqrt(replications)
        assert coverage.std().item() == pytest.approx(spread, rel=0.1)
        assert radius.median().item() == pytest.approx(3.0 * stats.norm.ppf((1 + level) / 2), rel=0.05)


def test_conformal_radius_is_the_right_order_statistic_and_infinite_when_too_few():
    errors = torch.tensor([[3.0], [-1.0], [2.0], [-5.0]], dtype=torch.float64)  # |e| sorted: 1, 2, 3, 5
    assert conformal_radius(errors, 0.5).item() == 3.0  # ceil(5 * 0.5) = 3rd smallest
    assert conformal_radius(errors, 0.8).item() == 5.0  # ceil(5 * 0.8) = 4th
    assert conformal_radius(errors, 0.9).item() == math.inf  # ceil(5 * 0.9) = 5 > 4 windows
    levels, forecast = conformal_forecast(torch.zeros(2, 1, dtype=torch.float64), errors, [0.8, 0.9])
    assert levels == (0.1, 0.5, 0.9) and forecast[0, 0].tolist() == [-5.0, 0.0, 5.0]  # 0.9 left out


def test_pinball_loss_and_crps_match_independent_references():
    rng = np.random.default_rng(0)
    taus = [0.05, 0.3, 0.5, 0.8]
    quantiles = np.sort(rng.normal(size=(50, 2, 4)), axis=-1)
    actual = rng.normal(size=(50, 2))
    u = actual[..., None] - quantiles
    expected = np.mean([np.mean(np.maximum(t * u[..., j], (t - 1) * u[..., j])) for j, t in enumerate(taus)])
    got = pinball_loss(torch.tensor(quantiles), torch.tensor(actual), taus).item()
    assert got == pytest.approx(expected, rel=1e-12)
    # CRPS of the discrete law that puts the mass of each tau cell on its quantile: E|X - y| - E|X - X'| / 2
    edges = np.array([0.0, 0.175, 0.4, 0.65, 1.0])
    mass = np.diff(edges)
    first = (mass * np.abs(quantiles - actual[..., None])).sum(-1)
    spread = np.abs(quantiles[..., :, None] - quantiles[..., None, :])
    second = 0.5 * (mass[:, None] * mass[None, :] * spread).sum((-1, -2))
    got = crps_from_quantiles(torch.tensor(quantiles), torch.tensor(actual), taus).item()
    assert got == pytest.approx((first - second).mean(), rel=1e-12)


def test_interval_metrics_count_coverage_and_width_per_level():
    forecast = torch.tensor([[[0.0, 1.0, 2.0]], [[0.0, 1.0, 4.0]]])  # two windows, one step, q 0.1 / 0.5 / 0.9
    metrics = interval_metrics(forecast, torch.tensor([[1.5], [5.0]]), QUANTILES)
    assert metrics["coverage_80"] == 0.5 and metrics["width_80"] == 3.0
    assert central_intervals([0.025, 0.1, 0.5, 0.9, 0.975]) == [(0.8, 1, 3), (0.95, 0, 4)]


@pytest.mark.parametrize("bad, message", [
    ([0.0, 0.5, 0.9], r"\[0.0\] outside \(0, 1\)"),
    ([0.1, 0.5, 1.2], r"\[1.2\] outside \(0, 1\)"),
    ([0.9, 0.5, 0.1], r"is not sorted.*model.quantiles=\[0.1, 0.5, 0.9\]"),
    ([0.1, 0.5, 0.5, 0.9], r"\[0.5\] duplicated"),
    ([0.1, 0.9], r"lacks 0.5: the median is the point forecast"),
    ("abc", "not a list of numbers"),
])
def test_bad_quantiles_are_one_line_errors_naming_the_field_and_the_fix(bad, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_quantiles(bad)
    assert "model.quantiles" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=message):  # the models check it too
        RNNForecaster(quantiles=bad)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_has_a_quantile_head_whose_quantiles_come_out_ordered(name):
    torch.manual_seed(0)
    small = {"hidden_size": 8} if "hidden_size" in model_fields(name) else {}
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "model" / f"{name}.yaml"), small)
    model = instantiate(cfg, n_features=2, horizon=3, window=12, quantiles=QUANTILES, _convert_="all")
    x = torch.randn(5, 12, 2)
    assert model(x).shape == (5, 3 * len(QUANTILES)) == (5, model.output_size)
    with torch.no_grad():
        for head in model.modules():  # extreme weights: ordered by construction, not by luck
            if isinstance(head, torch.nn.Linear):
                head.weight.mul_(50)
        forecast = model.eval().forecast(x * 10)
    assert forecast.shape == (5, 3, 3)
    assert (forecast.diff(dim=-1) >= 0).all()
    assert torch.equal(model.point(forecast), forecast[..., 1])  # the median is the point forecast
    loss = model.loss(model.train().training_forward(x, torch.randn(5, 3)), torch.randn(5, 3))
    loss.backward()  # the pinball loss trains every model
    assert loss.isfinite() and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_the_pinball_loss_teaches_the_head_the_noise_quantiles():
    """Targets that are pure N(0, 1) noise: the learned quantiles are the noise's, -1.28, 0 and +1.28."""
    torch.manual_seed(0)
    model = RNNForecaster(hidden_size=4, num_layers=1, dropout=0.0, window=2, quantiles=QUANTILES)
    x, y = torch.rand(1000, 2, 1), torch.randn(1000, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(150):
        optimizer.zero_grad()
        model.loss(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        learned = model.eval().forecast(x).mean((0, 1))
    np.testing.assert_allclose(learned.numpy(), stats.norm.ppf(QUANTILES), atol=0.12)


def random_walk_csv(path, sigma: float = 2.0):
    """20 years of business days whose High is a Gaussian random walk: persistence's errors are N(0, sigma^2)."""
    dates = pd.bdate_range("2000-01-03", "2019-12-31")
    high = 500 + np.cumsum(np.random.default_rng(1).normal(0, sigma, len(dates)))
    pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "High": high.round(4)}).to_csv(path, index=False)
    return path


def test_a_run_reports_persistence_conformal_coverage_at_the_nominal_level(tmp_path):
    csv = random_walk_csv(tmp_path / "walk.csv")
    metrics = run(compose_train(["data=csv", f"data.path={csv}", "data.features=[High]", *FAST, "model=vanilla",
                                 "trainer.limit_train_batches=2", "data.val_fraction=0.1"], tmp_path / "run"))
    n_val = int(metrics["intervals"].split()[2])  # "split-conformal from <n> validation windows"
    n_test = len(pd.read_csv(tmp_path / "run" / "predictions.csv"))
    assert n_val > 400 and n_test > 240
    for level in (0.8, 0.95):
        name = f"{100 * level:g}"
        covered = metrics[f"test/persistence_coverage_{name}"]
        spread = math.sqrt(level * (1 - level) * (1 / n_test + 1 / n_val))
        assert abs(covered - level) < 3 * spread, (level, covered)
        width = 2 * 2.0 * stats.norm.ppf((1 + level) / 2)
        assert metrics[f"test/persistence_width_{name}"] == pytest.approx(width, rel=0.15)
    for key in ("test/coverage_80", "test/width_95", "test/pinball", "test/crps", "test/persistence_crps"):
        assert math.isfinite(metrics[key]), key
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert (predictions["lower_95"] <= predictions["lower_80"]).all()
    assert (predictions["lower_80"] <= predictions["predicted"]).all()
    assert (predictions["predicted"] <= predictions["upper_80"]).all()
    inside = (predictions["lower_80"] <= predictions["actual"]) & (predictions["actual"] <= predictions["upper_80"])
    assert inside.mean() == pytest.approx(metrics["test/coverage_80"])


def test_a_quantile_run_reports_the_heads_intervals_beside_persistence(fast_cfg, tmp_path):
    metrics = run(fast_cfg("model=gru", "model.quantiles=[0.05,0.5,0.95]", "data.horizon=2",
                           "trainer.limit_train_batches=2"))
    assert metrics["intervals"] == "quantile head [0.05, 0.5, 0.95]"
    assert {"test/coverage_90", "test/width_90", "test/persistence_coverage_90", "test/pinball",
            "test/persistence_pinball", "test/crps"} <= set(metrics)
    assert "test/coverage_80" not in metrics  # the head's levels, not interval_levels
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert {"lower_90", "upper_90", "lower_90_t+2", "upper_90_t+2"} <= set(predictions.columns)
    assert (predictions["lower_90_t+2"] <= predictions["predicted_t+2"]).all()
    assert (predictions["predicted_t+2"] <= predictions["upper_90_t+2"]).all()


def test_without_a_validation_set_the_run_and_predict_say_conformal_intervals_need_one(prices_csv, tmp_path, capsys):
    overrides = ["data=csv", f"data.path={prices_csv}", *FAST, "model=vanilla", "trainer.limit_train_batches=2",
                 "data.val_fraction=0", "trainer.limit_val_batches=0", "test_checkpoint=last", "~callbacks.checkpoint"]
    metrics = run(compose_train(overrides, tmp_path / "run"))
    assert metrics["intervals"].startswith("none: conformal intervals need a validation set (data.val_fraction > 0)")
    assert not [k for k in metrics if "coverage" in k or "crps" in k]
    assert "conformal intervals need a validation set" in capsys.readouterr().out
    frame = predict(compose_entry("predict", [f"ckpt_path={tmp_path / 'run'}", "data=csv", f"data.path={prices_csv}",
                                              "data.val_fraction=0"], tmp_path / "predict"))
    assert list(frame.columns) == ["date", "ticker", "step", "forecast", "persistence"]
    assert "Intervals: none: conformal intervals need a validation set" in capsys.readouterr().out


def test_the_leaderboard_has_an_interval_table_of_means_over_seeds(tmp_path):
    for name, model, seed, coverage in (("0_a", "gru", 0, 0.7), ("1_a", "gru", 1, 0.9), ("2_b", "vanilla", 0, 0.8)):
        run_dir = tmp_path / name / ".hydra"
        run_dir.mkdir(parents=True)
        OmegaConf.save({"seed": seed, "model": {"hidden_size": 8}}, run_dir / "config.yaml")
        OmegaConf.save({"hydra": {"runtime": {"choices": {"model": model}}}}, run_dir / "hydra.yaml")
        metrics = {"status": "completed", "test/rmse": 2.0, "test/persistence_rmse": 1.0, "num_parameters": 10,
                   "train_seconds": 1.0, "epochs": 1, "intervals": "split-conformal from 50 validation windows",
                   "test/coverage_80": coverage, "test/width_80": 4 * coverage, "test/persistence_coverage_80": 0.8,
                   "test/persistence_width_80": 3.0, "test/pinball": 0.5, "test/persistence_pinball": 0.4,
                   "test/crps": 1.5, "test/persistence_crps": 1.2}
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    compare(tmp_path, ["model"])
    table = pd.read_csv(tmp_path / "leaderboard_intervals.csv", index_col="model")
    assert table.loc["gru", "coverage_80"] == pytest.approx(0.8) and table.loc["vanilla", "width_80"] == 3.2
    assert table.loc["gru", "persistence_crps"] == 1.2
    text = (tmp_path / "leaderboard.md").read_text()
    assert "| model | intervals | cover 80% | persistence cover 80% | width 80% |" in text
    assert "| gru | split-conformal from 50 validation windows | 0.800 | 0.800 | 3.200 | 3.000 |" in text
