"""Pooling forecasts over folds and tickers, the scale-free loss, the Model Confidence Set, SPA and the report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CONF, FAST, MODELS, cli, sweep_jobs, write_tickers_csv
from hydra import compose, initialize_config_dir

from lstm_zoo.evaluation.backtest import backtest_tables
from lstm_zoo.evaluation.confidence import Bootstrap, confidence_set_pvalues, spa_pvalue
from lstm_zoo.evaluation.ensemble import predictions_metrics
from lstm_zoo.evaluation.pooling import pool_folds, pooled_metrics, relative_losses

QUICK = Bootstrap(block_size=10, reps=300, seed=0)


def forecasts(noise: float, seed: int, folds: int = 3, days: int = 120) -> pd.DataFrame:
    """A pooled predictions frame: tickers near $500 and $25, `folds` folds of `days` days, forecast = persistence
    moved towards the actual price (noise < 1: better than persistence) plus noise of that relative size."""
    rng = np.random.default_rng(seed)
    frames = []
    for ticker, level in (("AAA", 500.0), ("BBB", 25.0)):
        data = np.random.default_rng(7 if ticker == "AAA" else 8)  # the same prices in every configuration
        dates = pd.bdate_range("2019-01-01", periods=folds * days + 1)
        prices = level * np.exp(np.cumsum(data.normal(0, 0.01, len(dates))))
        last, actual = prices[:-1], prices[1:]
        predicted = last + (1 - noise) * (actual - last) + noise * level * 0.01 * rng.normal(size=len(actual))
        frames.append(pd.DataFrame({"date": dates[1:], "ticker": ticker, "actual": actual, "predicted": predicted,
                                    "persistence": last, "fold": np.repeat(np.arange(folds), days)}))
    return pd.concat(frames, ignore_index=True)


def test_pooling_is_the_concatenation_of_the_folds_and_refuses_overlaps() -> None:
    frame = forecasts(0.5, seed=0)
    folds = [part for _, part in frame.groupby("fold")]
    pooled = pool_folds(folds[::-1])
    pd.testing.assert_frame_equal(pooled, frame.sort_values(["ticker", "date"]).reset_index(drop=True))
    for ticker, part in pooled.groupby("ticker"):  # the pooled RMSE is that of all folds' errors together
        errors = np.concatenate([(f["predicted"] - f["actual"])[f["ticker"] == ticker] for f in folds])
        assert predictions_metrics(part)["test/rmse"] == pytest.approx(math.sqrt((errors**2).mean()), rel=1e-12)
    with pytest.raises(ValueError, match=r"share a ticker and date .* their test periods overlap"):
        pool_folds([folds[0], folds[1], folds[1].iloc[:5]])


def test_the_relative_loss_is_scale_free_and_one_for_persistence() -> None:
    frame = forecasts(0.7, seed=1)
    losses = relative_losses(frame)
    assert losses.groupby(["ticker", "fold"])["persistence_loss"].mean().to_numpy() == pytest.approx(1.0)
    scaled = frame.copy()
    scaled.loc[scaled["ticker"] == "BBB", ["actual", "predicted", "persistence"]] *= 37.0  # another currency
    for key, value in pooled_metrics(frame).items():
        assert pooled_metrics(scaled)[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_pooled_metrics_of_one_ticker_and_fold_are_the_usual_ones() -> None:
    one = forecasts(0.8, seed=2, folds=1)
    one = one[one["ticker"] == "AAA"]
    usual, pooled = predictions_metrics(one), pooled_metrics(one)
    assert pooled["skill"] == pytest.approx(usual["test/skill"], rel=1e-9)
    assert pooled["dm_stat"] == pytest.approx(usual["test/dm_stat"], rel=1e-9)
    assert pooled["dm_pvalue"] == pytest.approx(usual["test/dm_pvalue"], rel=1e-9)


def test_the_mcs_keeps_a_clearly_best_forecast_and_drops_a_clearly_worse_one() -> None:
    rng = np.random.default_rng(0)
    common = rng.chisquare(1, 800)  # a shared hard-day component, as real daily losses have
    losses = pd.DataFrame({"best": 0.5 * common + 0.1 * rng.chisquare(1, 800),
                           "middle": 1.0 * common + 0.1 * rng.chisquare(1, 800),
                           "worst": 2.0 * common + 0.1 * rng.chisquare(1, 800)})
    pvalues = confidence_set_pvalues(losses, QUICK)
    assert pvalues["best"] == 1.0 and pvalues["middle"] < 0.10 and pvalues["worst"] < 0.10
    assert spa_pvalue(losses["middle"], losses[["best", "worst"]], QUICK) < 0.05  # "best" beats the benchmark
    assert spa_pvalue(losses["best"], losses[["middle", "worst"]], QUICK) > 0.5  # nothing beats "best"


def test_the_mcs_keeps_every_forecast_when_they_are_equally_good() -> None:
    rng = np.random.default_rng(3)
    equal = pd.DataFrame({name: rng.chisquare(1, 800) for name in ("a", "b", "c", "d")})
    assert (confidence_set_pvalues(equal, QUICK) >= 0.25).all()
    same = pd.DataFrame({"x": equal["a"], "y": equal["a"], "z": equal["a"]})  # identical forecasts
    assert confidence_set_pvalues(same, QUICK).tolist() == [1.0, 1.0, 1.0]
    twins = equal.assign(e=equal["a"])
    pvalues = confidence_set_pvalues(twins, QUICK)
    assert pvalues["e"] == pvalues["a"] and (pvalues >= 0.25).all()
    assert spa_pvalue(equal["a"], same[["x", "y"]], QUICK) == 1.0


def test_backtest_tables_pool_per_seed_and_judge_on_the_seed_mean_loss() -> None:
    runs = {"good": {0: forecasts(0.6, seed=10), 1: forecasts(0.6, seed=11)},
            "bad": {0: forecasts(3.0, seed=12), 1: forecasts(3.0, seed=13)}}
    tables = backtest_tables(runs, QUICK, (0.10, 0.25))
    pooled = tables["pooled"]
    assert list(pooled.index) == ["good", "persistence", "bad"]  # sorted by relative MSE
    skills = [pooled_metrics(frame)["skill"] for frame in runs["good"].values()]
    assert pooled.loc["good", "skill_mean"] == pytest.approx(np.mean(skills))
    assert pooled.loc["good", "skill_std"] == pytest.approx(np.std(skills, ddof=1))
    assert pooled.loc["good", "in_mcs_0.1"] and not pooled.loc["bad", "in_mcs_0.1"]
    assert not pooled.loc["persistence", "in_mcs_0.25"] and tables["spa_p"] < 0.05
    # the loss series of a configuration: each day's relative loss averaged over its seeds
    seed_mean = (relative_losses(runs["good"][0])["loss"] + relative_losses(runs["good"][1])["loss"]) / 2
    daily = seed_mean.groupby(runs["good"][0]["date"].to_numpy()).mean()
    np.testing.assert_allclose(tables["daily"]["good"].to_numpy(), daily.to_numpy(), rtol=1e-12)
    folds, tickers = tables["per_fold"], tables["per_ticker"]
    fold1 = [pooled_metrics(frame[frame["fold"] == 1])["skill"] for frame in runs["bad"].values()]
    assert folds.set_index(["config", "fold"]).loc[("bad", 1), "skill_mean"] == pytest.approx(np.mean(fold1))
    aaa = [predictions_metrics(frame[frame["ticker"] == "AAA"])["test/rmse"] for frame in runs["good"].values()]
    assert tickers.set_index(["ticker", "config"]).loc[("AAA", "good"), "rmse_mean"] == pytest.approx(np.mean(aaa))


def test_walk_forward_experiment_sweeps_models_targets_seeds_and_eight_folds() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=walk_forward"], return_hydra_config=True)
    jobs = sweep_jobs("walk_forward")  # model: glob(*) expanded as Hydra's sweeper does
    assert len(jobs) == len(MODELS) * 2 * 3 * 8 and {f"model={m}" for m in MODELS} <= {o for job in jobs for o in job}
    assert {f"backtest.fold={k}" for k in range(8)} | {"data.target_transform=diff", "seed=2"} <= \
        {o for job in jobs for o in job}
    assert list(cfg.data.tickers) == ["AAPL", "GOOG", "IBM", "MSFT"] and cfg.backtest.n_folds == 8


@pytest.mark.slow
def test_a_walk_forward_sweep_and_its_comparison(tmp_path: Path) -> None:
    """The issue's command on a two-ticker file: 3 folds x 2 models, then compare.py's tables and statistics."""
    csv = write_tickers_csv(tmp_path / "all_stocks.csv", start="2016-01-01")
    sweep = tmp_path / "sweep"
    cli("train.py", ["-m", "backtest=walk_forward", "backtest.n_folds=3", "backtest.fold=range(3)", "model=vanilla,gru",
                     "data=csv", f"data.path={csv}", "data.tickers=[AAA,BBB]", *FAST, "model.num_layers=1",
                     f"hydra.sweep.dir={sweep}"], timeout=600, check=True)
    report = cli("scripts/compare.py", [str(sweep), "--reps", "200"], check=True)
    for heading in ("## Pooled over folds and tickers", "## Skill per fold", "## Per ticker", "at 10% (90% "
                    "confidence)", "at 25% (75% confidence)", "over the 2 configuration(s) tried: p = "):
        assert heading in report.stdout, heading
    per_ticker = pd.read_csv(sweep / "per_ticker.csv").set_index(["ticker", "config"])
    runs = [p.parent for p in sweep.glob("*/predictions.csv")
            if "model=gru" in (p.parent / ".hydra" / "overrides.yaml").read_text()]
    assert len(runs) == 3
    folds = pd.concat(pd.read_csv(r / "predictions.csv") for r in runs)
    bbb = folds[folds["ticker"] == "BBB"]
    assert per_ticker.loc[("BBB", "gru"), "rmse_mean"] == pytest.approx(
        float(np.sqrt(((bbb["predicted"] - bbb["actual"]) ** 2).mean())), rel=1e-9)  # pooled = concatenated
    pooled = pd.read_csv(sweep / "pooled.csv").set_index("config")
    assert pooled.loc["gru", "folds"] == 3 and pooled.loc["gru", "tickers"] == 2
    assert (sweep / "skill_per_fold.png").is_file()
