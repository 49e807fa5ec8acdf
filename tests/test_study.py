"""The walk-forward study's cost: a job's time breakdown, early stopping, refit every k folds, resumable sweeps."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lstm_zoo.data import DataError
from lstm_zoo.data.splits import WalkForward
from lstm_zoo.pipeline import run
from lstm_zoo.timing import PARTS
from tests.helpers import CONF, FAST, ROOT, compose_train, run_main, write_tickers_csv


@pytest.fixture
def tickers_csv(tmp_path: Path) -> Path:
    return write_tickers_csv(tmp_path / "all_stocks.csv", start="2019-01-01")


def fold_cfg(path: Path, out: Path, *overrides: str):
    return compose_train(["data=csv", f"data.path={path}", "data.tickers=[AAA,BBB]", "backtest=walk_forward",
                          "backtest.n_folds=3", "model=vanilla", "model.num_layers=1", *FAST, *overrides], out)


def test_a_job_records_where_its_time_went(fast_cfg, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="lstm_zoo"):
        metrics = run(fast_cfg("trainer.max_epochs=2"))
    timing = metrics["timing"]
    epoch_lines = [r.getMessage() for r in caplog.records
                   if r.name == "lstm_zoo.callbacks" and r.getMessage().startswith("epoch ")]  # EpochLog's
    assert [line.rsplit(", ", 1)[1] for line in epoch_lines] == \
        [f"{e['train'] + e['validation']:.1f} s" for e in timing["epochs"]]  # each epoch timed once
    assert set(PARTS) | {"wall", "epochs"} == set(timing)
    assert all(timing[part] >= 0 for part in PARTS) and timing["train"] > 0 and timing["test"] > 0
    assert sum(timing[part] for part in PARTS) <= timing["wall"] + 1e-9
    assert len(timing["epochs"]) == metrics["epochs"] == 2
    assert all(e["train"] > 0 and e["validation"] > 0 for e in timing["epochs"])
    assert sum(e["train"] for e in timing["epochs"]) == pytest.approx(timing["train"])
    saved = json.loads((Path(fast_cfg().output_dir) / "metrics.json").read_text())
    assert saved["timing"]["wall"] == timing["wall"]
    assert any(r.getMessage().startswith("time: ") and "train " in r.getMessage() for r in caplog.records)


def test_the_study_config_stops_early_and_has_a_fixed_sweep_folder() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=walk_forward"], return_hydra_config=True)
    stopping = cfg.callbacks.early_stopping
    assert stopping._target_.endswith("EarlyStopping") and stopping.monitor == "val/loss" and stopping.mode == "min"
    assert stopping.patience == 5 and cfg.trainer.max_epochs == 20 and cfg.test_checkpoint == "best"
    assert cfg.backtest.refit_every == 1
    folders = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert folders["dir"] == "outputs/study"  # no ${now:...}: the same command finds the same sweep
    assert "job.num" not in folders["subdir"]  # a job's folder is named by its configuration alone


def test_a_plateau_stops_a_walk_forward_fold_early(tickers_csv: Path, tmp_path: Path) -> None:
    """lr=1e-30 leaves the float32 weights unchanged, so val/loss never improves after the first epoch: patience 5
    stops the fold after 6 of its 20 epochs."""
    metrics = run(fold_cfg(tickers_csv, tmp_path / "run", "trainer.max_epochs=20", "model.optimizer.lr=1e-30",
                           "trainer.limit_train_batches=2"))
    assert metrics["status"] == "completed" and metrics["epochs"] == 6 and len(metrics["timing"]["epochs"]) == 6


def test_refit_every_k_folds_trains_on_the_refit_folds_period_and_tests_its_own() -> None:
    calendar = pd.bdate_range("2015-01-01", "2022-12-31")
    folds = WalkForward(n_folds=4).folds(calendar)
    for fold, refit in ((0, 0), (1, 0), (2, 2), (3, 2)):
        period = WalkForward(fold=fold, n_folds=4, refit_every=2).period(calendar)
        assert (period.train_start, period.train_end) == (folds[refit].train_start, folds[refit].train_end)
        assert (period.test_start, period.test_end) == (folds[fold].test_start, folds[fold].test_end)
        assert period.train_end < folds[fold].test_start
    assert WalkForward(fold=3, n_folds=4, refit_every=5).period(calendar).train_end == folds[0].train_end
    with pytest.raises(DataError, match="backtest.refit_every=0"):
        WalkForward(refit_every=0)


def weights(metrics: dict) -> dict[str, torch.Tensor]:
    return torch.load(metrics["best_checkpoint"], weights_only=True)["state_dict"]


def test_a_fold_between_refits_never_sees_its_test_prices(tickers_csv: Path, tmp_path: Path) -> None:
    """refit_every=2: fold 1 forecasts with fold 0's model; prices from fold 1's first test day on (its test year
    and everything after) changed leave the weights it forecasts with bit-identical, and only its forecasts move."""
    overrides = ("backtest.fold=1", "backtest.refit_every=2", "trainer.max_epochs=2", "trainer.limit_train_batches=3")
    first_test_day = pd.Timestamp(run(fold_cfg(tickers_csv, tmp_path / "original", *overrides))["test_start"])
    frame = pd.read_csv(tickers_csv, parse_dates=["Date"])
    frame.loc[frame["Date"] >= first_test_day, ["Open", "High", "Low", "Close"]] *= 1.3
    frame.to_csv(tmp_path / "changed.csv", index=False, date_format="%Y-%m-%d")
    changed = run(fold_cfg(tmp_path / "changed.csv", tmp_path / "changed", *overrides))
    original = json.loads((tmp_path / "original" / "metrics.json").read_text())
    fold0 = WalkForward(fold=0, n_folds=3).folds(pd.DatetimeIndex(sorted(frame["Date"].unique())))[0]
    assert original["train_end"] == changed["train_end"] == str(fold0.train_end.date())  # fold 0's training
    a, b = weights(original), weights(changed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert original["val/rmse"] == changed["val/rmse"] and original["test/AAA/rmse"] != changed["test/AAA/rmse"]


def test_a_fold_between_refits_reuses_its_refit_folds_finished_job(tickers_csv: Path, tmp_path: Path) -> None:
    """In one sweep folder fold 1 tests fold 0's best checkpoint instead of training; alone it trains the same
    model itself (same seed and training period); either way its forecasts are the same."""
    overrides = ("backtest.refit_every=2", "trainer.max_epochs=2", "trainer.limit_train_batches=3")
    alone = run(fold_cfg(tickers_csv, tmp_path / "alone" / "fold1", "backtest.fold=1", *overrides))
    fold0 = run(fold_cfg(tickers_csv, tmp_path / "sweep" / "fold0", "backtest.fold=0", *overrides))
    fold1 = run(fold_cfg(tickers_csv, tmp_path / "sweep" / "fold1", "backtest.fold=1", *overrides))
    assert "refit_from" not in alone and alone["epochs"] == 2
    assert Path(fold1["refit_from"]) == Path(fold0["best_checkpoint"]) == Path(fold1["best_checkpoint"])
    assert fold1["epochs"] == 0 and fold1["timing"]["train"] == 0
    a, b = weights(alone), weights(fold1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    predictions = [pd.read_csv(tmp_path / where / "fold1" / "predictions.csv") for where in ("alone", "sweep")]
    pd.testing.assert_frame_equal(*predictions)
    assert fold1["test_start"] > fold0["test_end"] and fold1["fold"] == 1  # pooled as fold 1, like any fold job
    other = run(fold_cfg(tickers_csv, tmp_path / "sweep" / "fold1_seed1", "backtest.fold=1", "seed=1", *overrides))
    assert "refit_from" not in other  # another configuration's job is never reused


@pytest.mark.slow
def test_the_study_command_run_twice_skips_its_completed_jobs(tickers_csv: Path, tmp_path: Path) -> None:
    """experiment=walk_forward's folder layout: 2 jobs, then the same command again. The basic launcher runs the
    jobs in the command's own process, here the test's (a job skips itself whatever the launcher; under joblib:
    test_sweep_failures.py's killed-worker test)."""
    sweep = tmp_path / "study"
    command = ["-m", "experiment=walk_forward", "data=csv", f"data.path={tickers_csv}",
               "data.tickers=[AAA,BBB]", "backtest.n_folds=2", "backtest.end=null", "backtest.fold=0,1",
               "model=vanilla", "model.num_layers=1", "data.target_transform=level", "seed=0", *FAST,
               "trainer.limit_train_batches=3", f"hydra.sweep.dir={sweep}"]
    run_main("train.py", command, check=True)
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["vanilla_level_seed0_fold0", "vanilla_level_seed0_fold1"]
    recorded = {job: json.loads((sweep / job / "metrics.json").read_text()) for job in jobs}
    assert all(r["status"] == "completed" for r in recorded.values())
    assert all("time: " in (sweep / job / "train.log").read_text() for job in jobs)  # the breakdown, in its log
    cost = study_cost_script().main([str(sweep), "--jobs", "2"])  # the command line narrowed the experiment's lists
    assert cost["planned_jobs"] == cost["measured_jobs"] == 2
    assert cost["measured_job_seconds"] == sum(r["timing"]["wall"] for r in recorded.values())
    run_main("train.py", command, check=True)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == jobs
    for job in jobs:  # not trained again: the record (and its timing) is the first run's
        assert json.loads((sweep / job / "metrics.json").read_text())["timing"] == recorded[job]["timing"]
        assert "holds a completed run of this configuration" in (sweep / job / "train.log").read_text()


def write_job(sweep: Path, name: str, model: str, fold: int, seconds: float) -> None:
    """A job folder as train.py leaves it, with only what study_cost reads."""
    hydra_dir = sweep / name / ".hydra"
    hydra_dir.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": 0, "data": {"target_transform": "level"}, "backtest": {"fold": fold}}),
                   hydra_dir / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {"model": model}}}}), hydra_dir / "hydra.yaml")
    parts = {part: 0.0 for part in PARTS} | {"startup": 1.0, "train": seconds - 1.0}
    (sweep / name / "metrics.json").write_text(json.dumps({"status": "completed", "epochs": 3, "timing": {
        **parts, "wall": seconds, "epochs": []}}))


def study_cost_script():
    spec = importlib.util.spec_from_file_location("study_cost", ROOT / "scripts" / "study_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_study_cost_projects_the_whole_sweep_from_its_measured_jobs(tmp_path: Path, capsys) -> None:
    study_cost = study_cost_script()
    sweep = tmp_path / "study"
    OmegaConf.save(OmegaConf.create({"hydra": {"sweeper": {"params": {"model": "vanilla,gru",
                                                                      "backtest.fold": "range(3)"}},
                                               "overrides": {"task": ["seed=0", "hydra.sweep.dir=x"]}}}),
                   tmp_path / "multirun.yaml")
    sweep.mkdir()
    (tmp_path / "multirun.yaml").rename(sweep / "multirun.yaml")
    for name, model, fold, seconds in (("a", "vanilla", 0, 10.0), ("b", "vanilla", 1, 20.0), ("c", "gru", 0, 30.0)):
        write_job(sweep, name, model, fold, seconds)
    (sweep / "d").mkdir()  # a job that never started: no timing, not measured
    numbers = study_cost.main([str(sweep), "--jobs", "2"])
    # planned in sweep order: vanilla folds 0, 1, 2 (its mean, 15), gru folds 0, 1, 2 (gru's only job, 30 each)
    assert numbers["measured_jobs"] == 3 and numbers["measured_job_seconds"] == 60.0
    assert numbers["planned_jobs"] == 6 and numbers["projected_job_seconds"] == 10 + 20 + 15 + 3 * 30
    assert numbers["projected_wall_seconds"] == 80.0  # worker 1: 10, 15, 30, 30 ... the queue as joblib runs it
    assert study_cost.main([str(sweep), "--jobs", "1"])["projected_wall_seconds"] == 135.0
    assert study_cost.main([str(sweep), "--jobs", "1", "--total-jobs", "4"])["projected_job_seconds"] == 80.0
    printed = capsys.readouterr().out
    assert "fold 0" in printed and "vanilla" in printed and "6 jobs" in printed


def write_fold_job(sweep: Path, name: str, cfg, model: str, windows: int, epochs: list[dict], **parts: float) -> float:
    """A job folder of `cfg` (its model `model`) whose metrics.json records `epochs`, the other `parts` and the
    training windows it fit on; returns its wall seconds (the sum of its parts)."""
    (sweep / name / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, sweep / name / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {"model": model}}}}),
                   sweep / name / ".hydra" / "hydra.yaml")
    timing = {part: 0.0 for part in PARTS} | parts
    wall = sum(timing.values())
    record = {"status": "completed", "epochs": len(epochs), "windows": {"train": windows, "val": 1, "test": 1},
              "timing": {**timing, "wall": wall, "epochs": epochs}, "tested_weights": "best"}
    if model == "linear":
        record["tested_weights"] = "fitted"
    elif not epochs:
        record["refit_from"] = str(sweep / "fold0" / "checkpoints" / "best.ckpt")
    (sweep / name / "metrics.json").write_text(json.dumps(record))
    return wall


def test_study_cost_estimates_the_old_protocol_from_the_measured_epochs(tickers_csv: Path, tmp_path: Path,
                                                                        capsys) -> None:
    study_cost = study_cost_script()
    sweep = tmp_path / "study"
    settings = ["backtest.n_folds=2", "backtest.refit_every=2", "callbacks=early_stopping",
                "callbacks.early_stopping.patience=3", "trainer.max_epochs=10"]
    cfgs = [fold_cfg(tickers_csv, tmp_path / "out", *settings, f"backtest.fold={k}") for k in range(2)]
    # the training windows of each fold's own period (to 2020, to 2021), by hand: 2 tickers x (business days -
    # window 10 - horizon 1 + 1), less the last 10% of each ticker's windows (validation)
    own = [2 * (n - 10) - 2 * round((n - 10) * 0.1)
           for n in (len(pd.bdate_range("2019-01-01", end)) for end in ("2020-12-31", "2021-12-31"))]
    assert own[1] > own[0]
    fixed = {"startup": 1.0, "build": 0.5, "data": 0.5, "train": 6.0, "validation": 3.5, "fit_other": 0.5,
             "test": 2.0, "write": 0.5}
    trained = write_fold_job(sweep, "fold0", cfgs[0], "vanilla", own[0], [{"train": 2.0, "validation": 1.0}] * 3,
                             **fixed)  # 3 epochs of 3 s, stopped early: 9 s of the 15 s are epochs
    reused = write_fold_job(sweep, "fold1", cfgs[1], "vanilla", own[0], [], build=0.5, fit_other=0.25,
                            test=2.0, write=0.5)  # fold 0's model, fit on fold 0's windows, tests fold 1
    numbers = study_cost.main([str(sweep), "--total-jobs", "2"])
    rate = 3.0 / own[0]  # seconds per epoch and training window (fold 0's), also fold 1's: no later trained fold
    assert numbers["after_job_seconds"] == pytest.approx(trained + reused)
    assert numbers["before_job_seconds"] == pytest.approx(trained - 9 + 10 * 3.0 + reused + 10 * rate * own[1])
    assert numbers["early_only_job_seconds"] == pytest.approx(trained + reused + 3 * rate * own[1])
    printed = capsys.readouterr().out
    assert "refit every 2 folds" in printed and "patience 3" in printed and "10 epochs, no early stopping" in printed

    fitted = write_fold_job(sweep, "linear1", cfgs[1], "linear", own[0], [], data=0.5, train=1.0, test=2.0)
    jobs = study_cost.before_after(study_cost.measured_jobs(sweep)).set_index("run")
    assert jobs.loc["linear1", "kind"] == "fitted"  # refit on fold 1's own windows, nothing else changes
    assert jobs.loc["linear1", ["before", "early_only"]].tolist() == pytest.approx([fitted - 1 + own[1] / own[0]] * 2)
