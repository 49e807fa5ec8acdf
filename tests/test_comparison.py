"""Pooling forecasts over folds and tickers, the scale-free loss, the Model Confidence Set, SPA and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch
from arch.bootstrap import SPA, StationaryBootstrap
from conftest import CONF, FAST, fitted_models, sweep_jobs, trained_models, write_tickers_csv
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lstm_zoo.evaluation.backtest import backtest_tables, verdict
from lstm_zoo.evaluation.compare import main
from lstm_zoo.evaluation.confidence import (
    Bootstrap,
    StudentizedSPA,
    confidence_set_pvalues,
    spa_against_best,
    spa_pvalue,
)
from lstm_zoo.evaluation.headline import headline
from lstm_zoo.evaluation.leaderboard import pm
from lstm_zoo.evaluation.metrics import diebold_mariano, newey_west_lags, score
from lstm_zoo.evaluation.pooling import daily_losses, pool_folds, pooled_dm, pooled_metrics, relative_losses
from tests.helpers import run_main

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
        assert score(part)["rmse"] == pytest.approx(math.sqrt((errors**2).mean()), rel=1e-12)
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
    usual, pooled = score(one), pooled_metrics(one)
    assert pooled["skill"] == pytest.approx(usual["skill"], rel=1e-9)
    assert pooled["dm_stat"] == pytest.approx(usual["dm_stat"], rel=1e-9)
    assert pooled["dm_pvalue"] == pytest.approx(usual["dm_pvalue"], rel=1e-9)


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


def hansen_spa_pvalues(benchmark: np.ndarray, models: np.ndarray, block_size: int, reps: int,
                       seed: int) -> np.ndarray:
    """Lower, consistent and upper SPA p-values straight from Hansen (2005): the stationary-bootstrap kernel
    variance omega_k^2, T = max(0, max_k sqrt(n) dbar_k / omega_k), re-centring mu_k, T*_b and P(T* >= T)."""
    d = benchmark[:, None] - models
    n, mean = len(d), d.mean(axis=0)
    centred, q = d - mean, 1 / block_size
    omega2 = (centred**2).sum(axis=0) / n
    for i in range(1, n):
        kappa = (n - i) / n * (1 - q) ** i + i / n * (1 - q) ** (n - i)
        omega2 += 2 * kappa * (centred[:-i] * centred[i:]).sum(axis=0) / n
    t_values = np.sqrt(n) * mean / np.sqrt(omega2)
    statistic = max(t_values.max(), 0.0)
    consistent = np.where(t_values >= -np.sqrt(2 * np.log(np.log(n))), mean, 0.0)
    recentre = [np.maximum(mean, 0.0), consistent, mean]
    days = StationaryBootstrap(block_size, np.arange(n), seed=seed)  # the days each replication draws
    simulated = np.array([[max((np.sqrt(n) * (d[index].mean(axis=0) - mu) / np.sqrt(omega2)).max(), 0.0)
                           for mu in recentre] for (index,), _ in days.bootstrap(reps)])
    return (simulated >= statistic).mean(axis=0)


def steady_and_noisy(rng: np.random.Generator, edge: float, days: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """A benchmark's daily losses, and two models': one lower by `edge` with little noise, one equal plus loud noise."""
    benchmark = rng.chisquare(1, days) + 1.0
    steady = benchmark - edge + rng.normal(0, 0.1, days)
    noisy = benchmark + rng.normal(0, 3.0, days)
    return benchmark, np.column_stack([steady, noisy])


def test_the_spa_statistic_is_studentized_as_in_hansen_2005() -> None:
    benchmark, models = steady_and_noisy(np.random.default_rng(5), edge=0.01)
    models = np.column_stack([models, benchmark + 0.3 + np.random.default_rng(6).normal(0, 0.5, 500)])  # far worse
    spa = StudentizedSPA(benchmark, models, block_size=10, reps=300, seed=4)
    spa.compute()
    expected = hansen_spa_pvalues(benchmark, models, block_size=10, reps=300, seed=4)
    np.testing.assert_allclose(spa.pvalues[["lower", "consistent", "upper"]].to_numpy(), expected, atol=1e-12)
    assert 0 < expected[1] < 1  # an informative case, not p = 0 or 1 on both sides


def test_the_spa_finds_a_steady_better_model_beside_a_noisy_one_and_keeps_its_size() -> None:
    """arch 8's SPA ignores `studentize`: the noisy model's bootstrap maximum hides the steady model's edge."""
    rng, settings = np.random.default_rng(0), Bootstrap(block_size=20, reps=200, seed=0)
    studentized = unstudentized = null = 0
    for _ in range(20):
        benchmark, models = steady_and_noisy(rng, edge=0.05)
        frame = pd.DataFrame(models, columns=["steady", "noisy"])
        studentized += spa_pvalue(pd.Series(benchmark), frame, settings) < 0.05
        arch_spa = SPA(benchmark, models, block_size=20, reps=200, studentize=True, seed=0)
        arch_spa.compute()
        unstudentized += arch_spa.pvalues["consistent"] < 0.05
        equal = benchmark[:, None] + rng.normal(0, [0.1, 3.0], (500, 2))  # the same expected loss: H0 holds
        null += spa_pvalue(pd.Series(benchmark), pd.DataFrame(equal, columns=["steady", "noisy"]), settings) < 0.05
    assert studentized >= 18 and unstudentized <= 6
    assert null <= 3  # at 5%, about 1 of 20 data sets


def test_the_spa_of_a_model_better_or_worse_by_a_constant_is_defined() -> None:
    benchmark = pd.Series(np.random.default_rng(1).chisquare(1, 300))
    assert spa_pvalue(benchmark, pd.DataFrame({"better": benchmark - 0.1}), QUICK) == 0.0
    assert spa_pvalue(benchmark, pd.DataFrame({"worse": benchmark + 0.1, "same": benchmark}), QUICK) == 1.0


def test_the_spa_against_the_best_baseline_finds_a_better_trained_model_and_none_where_there_is_none() -> None:
    rng = np.random.default_rng(3)
    drift = rng.chisquare(1, 750) + 1.0  # the better of two baselines: the benchmark
    losses = pd.DataFrame({"drift": drift, "mean": drift + 0.5 + rng.normal(0, 0.3, 750),
                           "lstm": drift - 0.1 + rng.normal(0, 0.2, 750),  # clearly better than drift
                           "gru": drift + 0.05 + rng.normal(0, 0.5, 750)})  # a little worse than drift
    best, p = spa_against_best(losses, ["mean", "drift"], ["lstm", "gru"], QUICK)
    assert best == "drift" and p < 0.01
    best, p = spa_against_best(losses, ["mean", "drift"], ["gru"], QUICK)
    assert best == "drift" and p > 0.2
    assert spa_against_best(losses, [], ["gru"], QUICK)[0] is None


def test_backtest_tables_test_the_trained_configurations_against_the_best_fitted_one() -> None:
    runs = {"drift": {0: forecasts(0.8, seed=20)}, "mean": {0: forecasts(1.5, seed=21)},
            "lstm": {0: forecasts(0.5, seed=22), 1: forecasts(0.5, seed=23)}}
    tables = backtest_tables(runs, QUICK, (0.10,), fitted={"drift", "mean"})
    assert tables["best_baseline"] == "drift" and tables["trained"] == ["lstm"] and tables["spa_baseline_p"] < 0.01
    assert tables["pooled"]["fitted"].to_dict() == {"lstm": False, "drift": True, "mean": True,
                                                    "persistence": pytest.approx(np.nan, nan_ok=True)}
    text = "\n".join(verdict(tables, (0.10,), QUICK))
    assert "'no trained model beats the best baseline': benchmark drift" in text and "rejected at 5%: at least" in text
    worse = backtest_tables({**runs, "lstm": {0: forecasts(1.2, seed=24)}}, QUICK, (0.10,), fitted={"drift", "mean"})
    assert worse["best_baseline"] == "drift" and worse["spa_baseline_p"] > 0.2
    assert "no trained model is shown to beat it" in "\n".join(verdict(worse, (0.10,), QUICK))
    alone = backtest_tables(runs, QUICK, (0.10,))  # nothing fitted: no such test
    assert alone["best_baseline"] is None and math.isnan(alone["spa_baseline_p"])


def test_the_headline_puts_each_configurations_numbers_under_its_target_and_gives_both_spa_p_values() -> None:
    runs = {"drift / level": {0: forecasts(0.9, seed=30)}, "drift / diff": {0: forecasts(0.95, seed=31)},
            "lstm / diff": {0: forecasts(0.5, seed=32), 1: forecasts(0.6, seed=33)},
            "lstm / level": {0: forecasts(3.0, seed=34), 1: forecasts(3.5, seed=35)}}
    tables = backtest_tables(runs, QUICK, (0.10, 0.25), fitted={"drift / level", "drift / diff"})
    text = headline(tables, ["model", "data.target_transform"], (0.10, 0.25))
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    rows = {row[0].strip("`"): row for row in cells}
    assert rows["model"][2:] == ["`diff`: rel. MSE", "skill", "DM p", "in MCS", "`level`: rel. MSE", "skill",
                                 "DM p", "in MCS"]
    pooled = tables["pooled"]
    lstm, drift = rows["lstm"], rows["drift"]
    assert [lstm[1], drift[1]] == ["trained", "fitted"]
    assert lstm[2] == pm(pooled.loc["lstm / diff", "rel_mse_mean"], pooled.loc["lstm / diff", "rel_mse_std"], 4)
    assert lstm[6].startswith(f"{pooled.loc['lstm / level', 'rel_mse_mean']:.4f} ± ")  # two seeds: mean ± std
    assert drift[6] == f"{pooled.loc['drift / level', 'rel_mse_mean']:.4f}"
    assert lstm[5] == "10% and 25%" and lstm[9] == "out"  # the best one stays, the worst one goes
    assert list(rows)[1:] == ["persistence", "lstm", "drift"]  # persistence, then by the best rel. MSE
    assert f"({tables['best_baseline']}, against 2 trained configurations): " in text
    assert "'no configuration beats persistence' (4 configurations)" in text
    with pytest.raises(ValueError, match="two --by keys"):
        headline(tables, ["model"], (0.10,))


def ar1(rng: np.random.Generator, phi: float, days: int) -> np.ndarray:
    shocks, series = rng.normal(size=days), np.zeros(days)
    for t in range(1, days):
        series[t] = phi * series[t - 1] + shocks[t]
    return series


def newey_west_t(differential: np.ndarray, lags: int) -> float:
    """statsmodels' Newey-West t statistic of the mean of `differential` (a regression on a constant)."""
    fit = sm.OLS(differential, np.ones(len(differential))).fit(cov_type="HAC",
                                                               cov_kwds={"maxlags": lags, "use_correction": False})
    return float(fit.tvalues[0])


def errors(loss: np.ndarray) -> torch.Tensor:
    """Errors whose squares are `loss`, as diebold_mariano takes them."""
    return torch.tensor(np.sqrt(loss))[:, None]


def test_the_pooled_dm_uses_a_newey_west_variance_and_a_single_split_stays_r_equal() -> None:
    rng = np.random.default_rng(2)
    base = rng.chisquare(1, 1500) + 10.0
    correlated = base + 0.15 + ar1(rng, 0.4, 1500)  # serially correlated loss differential
    statistic, pvalue = pooled_dm(correlated, base, horizon=1, single_split=False)
    assert newey_west_lags(1500) == 7
    assert statistic == pytest.approx(newey_west_t(correlated - base, 7), rel=1e-9)
    plain = diebold_mariano(errors(correlated), errors(base))
    assert pooled_dm(correlated, base, horizon=1, single_split=True) == plain  # one ticker, one fold: R's test
    assert statistic < 0.8 * plain[0] and pvalue > plain[1]  # positive autocorrelation: less evidence than R's says
    base = rng.chisquare(1, 4000) + 10.0
    independent = base + 0.05 + rng.normal(size=4000)  # no serial correlation: the Newey-West lags add ~nothing
    assert pooled_dm(independent, base, 1, False)[0] == pytest.approx(
        diebold_mariano(errors(independent), errors(base))[0], rel=0.1)


def test_pooled_metrics_over_folds_and_tickers_use_the_newey_west_dm() -> None:
    frame = forecasts(0.9, seed=4)
    daily = daily_losses(frame)
    differential = (daily["loss"] - daily["persistence_loss"]).to_numpy()
    assert pooled_metrics(frame)["dm_stat"] == pytest.approx(newey_west_t(differential, newey_west_lags(len(daily))),
                                                             rel=1e-9)


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
    aaa = [score(frame[frame["ticker"] == "AAA"])["rmse"] for frame in runs["good"].values()]
    assert tickers.set_index(["ticker", "config"]).loc[("AAA", "good"), "rmse_mean"] == pytest.approx(np.mean(aaa))


def single_run(folder: Path, model: str, frame: pd.DataFrame, tickers: list[str] | None = None) -> dict:
    """A `python train.py` run folder as Hydra and the run write it (mode RUN), with `frame` as its predictions."""
    (folder / ".hydra").mkdir(parents=True)
    OmegaConf.save({"seed": 42, "model": {"hidden_size": 8}, "data": {"tickers": tickers}, "backtest": {"fold": None}},
                   folder / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": {"mode": "RUN", "runtime": {"choices": {"model": model}}}},
                   folder / ".hydra" / "hydra.yaml")
    frame.drop(columns="fold").to_csv(folder / "predictions.csv", index=False)
    metrics = {"status": "completed", "num_parameters": 10, "train_seconds": 1.0, "epochs": 1,
               **{f"test/{k}": v for k, v in score(frame).items()}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def test_compare_lists_a_folder_of_single_runs_one_row_per_run(tmp_path: Path) -> None:
    """outputs/runs: runs made one by one (the same model twice on the same days, another model, a multi-ticker run)
    are listed, not pooled; pooling them by model fails with a fix that works."""
    runs = tmp_path / "outputs" / "runs"
    two_tickers = forecasts(0.8, seed=20, folds=1)
    aaa = two_tickers[two_tickers["ticker"] == "AAA"]
    other = forecasts(0.9, seed=21, folds=1).query("ticker == 'AAA'")
    made = [("10", "vanilla", aaa, None), ("11", "vanilla", other, None), ("12", "gru", aaa, None),
            ("13", "vanilla", two_tickers, ["AAA", "BBB"])]
    published = {}
    for hour, model, frame, tickers in made:
        name = f"2026-01-01_{hour}-00-00-000001_{model}"
        published[name] = single_run(runs / name, model, frame, tickers)
    main([str(runs)])
    table = pd.read_csv(runs / "leaderboard.csv", index_col="run")
    assert sorted(table.index) == sorted(published)
    for run, metrics in published.items():
        assert table.loc[run, "rmse_mean"] == pytest.approx(metrics["test/rmse"], rel=1e-12)
        assert table.loc[run, "seeds"] == 1
    with pytest.raises(SystemExit, match=r"overlap.*--by run\.$"):
        main([str(runs), "--by", "model"])  # two vanilla runs of seed 42 forecast the same days
    main([str(runs), "--by", "run"])  # the fix it names
    assert sorted(pd.read_csv(runs / "leaderboard.csv", index_col="run").index) == sorted(published)


def test_walk_forward_experiment_sweeps_models_targets_seeds_and_eight_folds() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=walk_forward"], return_hydra_config=True)
    jobs = sweep_jobs("walk_forward")  # model: glob(...) expanded as Hydra's sweeper does
    trained = trained_models()  # every model but those fit in closed form: 3 seeds each
    assert len(jobs) == len(trained) * 2 * 3 * 8 and {f"model={m}" for m in trained} == {o for job in jobs for o in job
                                                                                       if o.startswith("model=")}
    baselines = sweep_jobs("walk_forward_baselines")  # deterministic: one seed, into the same study folder
    assert len(baselines) == len(fitted_models()) * 2 * 8 and {o for job in baselines for o in job
                                                                 if o.startswith(("model=", "seed="))} == \
        {*(f"model={m}" for m in fitted_models()), "seed=0"}
    assert {f"backtest.fold={k}" for k in range(8)} | {"data.target_transform=diff", "seed=2"} <= \
        {o for job in jobs for o in job}
    assert list(cfg.data.tickers) == ["AAPL", "GOOG", "IBM", "MSFT"] and cfg.backtest.n_folds == 8


@pytest.mark.slow
def test_a_walk_forward_sweep_and_its_comparison(tmp_path: Path) -> None:
    """The issue's command on a two-ticker file: 3 folds x 2 models, then compare.py's tables and statistics."""
    csv = write_tickers_csv(tmp_path / "all_stocks.csv", start="2016-01-01")
    sweep = tmp_path / "sweep"
    run_main("train.py", ["-m", "backtest=walk_forward", "backtest.n_folds=3", "backtest.fold=range(3)",
                          "model=vanilla,gru", "data=csv", f"data.path={csv}", "data.tickers=[AAA,BBB]", *FAST,
                          "model.num_layers=1", f"hydra.sweep.dir={sweep}"], check=True)
    report = run_main("scripts/compare.py", [str(sweep), "--reps", "200"], check=True)
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
