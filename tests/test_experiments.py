"""Experiments: sweep configs, the leaderboard, optuna search, launchers and evaluation from checkpoints."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import (
    CONF,
    MODELS,
    compose_train,
    fitted_models,
    read_metrics,
    sweep_jobs,
    write_prices_csv,
)
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lstm_zoo.checkpoints import load_forecaster
from lstm_zoo.data import StockDataModule
from lstm_zoo.errors import CheckpointError
from lstm_zoo.evaluation.leaderboard import compare
from lstm_zoo.pipeline import evaluate, run
from tests.helpers import run_main

CELLS = ["stacked", "gru", "min_gru", "min_lstm", "slstm"]  # experiment=lstm_vs_gru: one shape, five cells


@pytest.mark.parametrize(("experiment", "n_jobs", "models", "n_seeds"),
                         [("lstm_vs_gru", 25, CELLS, 5), ("zoo", 3 * len(MODELS), MODELS, 3)])
def test_experiment_expands_to_every_model_and_seed(experiment: str, n_jobs: int, models: list[str],
                                                   n_seeds: int) -> None:
    jobs = sweep_jobs(experiment)
    assert len(jobs) == n_jobs
    pairs = {(dict(o.split("=") for o in job)["model"], dict(o.split("=") for o in job)["seed"]) for job in jobs}
    assert {m for m, _ in pairs} == set(models)
    assert len(pairs) == n_jobs and len({s for _, s in pairs}) == n_seeds


def test_lstm_vs_gru_jobs_differ_only_in_the_cell_and_seed() -> None:
    """Every job has the stacked model's shape (4 x 50, Dropout 0.2, the same head, init and optimizer) and the
    same data and trainer; stacked and gru differ only in `cell`, the newer cells also in their own fields."""
    configs = {}
    for job in sweep_jobs("lstm_vs_gru"):
        cfg = OmegaConf.to_container(compose_train(["experiment=lstm_vs_gru", *job], Path("/tmp/x")))
        configs[tuple(job)] = cfg
    reference = configs[("model=stacked", "seed=0")]
    shape = ("hidden_size", "num_layers", "dropout", "init", "optimizer")
    for (model, seed), cfg in configs.items():
        name = model.split("=")[1]
        assert cfg["seed"] == int(seed.split("=")[1])
        assert cfg["model"]["cell"] == {"stacked": "lstm"}.get(name, name)
        assert {k: cfg["model"][k] for k in shape} == {k: reference["model"][k] for k in shape}
        if name == "gru":
            assert {**cfg["model"], "cell": "lstm"} == reference["model"]
        same = {**cfg, "seed": reference["seed"], "model": reference["model"]}
        assert same == reference, f"{model},{seed} differs from stacked seed 0 outside the model and seed"


@pytest.mark.parametrize("name", MODELS)
def test_zoo_models_compose_and_instantiate(name: str) -> None:
    cfg = compose_train(["experiment=zoo", f"model={name}"], Path("/tmp/x"))
    model = instantiate(cfg.model, n_features=1, horizon=1, window=12, _convert_="all")
    if name in fitted_models():  # fit in closed form: nothing to forecast with before fit (test_baselines.py)
        with pytest.raises(RuntimeError, match="is not fit yet"):
            model(torch.randn(3, 12, 1))
        return
    assert model(torch.randn(3, 12, 1)).shape == (3, 1)


def test_tutorial_experiment_trains_on_every_window_to_2016_and_tests_on_2017(tmp_path: Path) -> None:
    csv = write_prices_csv(tmp_path / "IBM.csv", start="2014-01-01", end="2017-12-31")
    cfg = compose_train(["experiment=tutorial", f"data.path={csv}"], tmp_path)
    assert (cfg.trainer.max_epochs, cfg.data.batch_size) == (20, 32)
    assert cfg.model.optimizer._target_ == "lstm_zoo.optim.KerasRMSprop" and cfg.model.optimizer.lr == 0.001
    model = instantiate(cfg.model, n_features=1, horizon=1, window=60, _convert_="all")
    assert len(model.layers) == 4 and model.layers[0].hidden_size == 50 and model.dropout.p == 0.2
    assert model.num_parameters == 10_400 + 3 * 20_200 + 51  # Keras' summary of the tutorial's model: 71,051
    assert not model.head.bias.any()  # Keras' Dense: Glorot kernel, zero bias
    dm: StockDataModule = instantiate(cfg.data)
    dm.setup()
    dates = pd.bdate_range("2014-01-01", "2017-12-31")
    train_days = dates[dates.year <= 2016]
    assert dm.window == 60 and list(dm.test_dates) == list(dates[dates.year == 2017])
    assert len(dm.datasets["val"]) == 0 and len(dm.datasets["train"]) == len(train_days) - 60  # all of them
    assert dm.datasets["train"].actual[-1, 0] == pd.read_csv(csv).set_index("Date").loc[
        train_days[-1].strftime("%Y-%m-%d"), "High"]  # the last training target is the last day of 2016
    assert cfg.test_checkpoint == "last" and cfg.callbacks.checkpoint is None


def test_tutorial_experiment_tests_the_weights_after_the_last_epoch(tmp_path: Path) -> None:
    """No validation picks the weights: test/* are the final epoch's, i.e. those of checkpoints/last.ckpt."""
    csv = write_prices_csv(tmp_path / "IBM.csv", start="2015-01-01", end="2017-12-31")
    cfg = compose_train(["experiment=tutorial", f"data.path={csv}", "trainer.max_epochs=3", "model.hidden_size=8",
                         "trainer.limit_train_batches=4", "trainer.enable_progress_bar=false"], tmp_path / "run")
    metrics = run(cfg)
    assert metrics["tested_weights"] == "last" and metrics["best_checkpoint"] is None
    assert not any(key.startswith("val/") for key in metrics)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        eval_cfg = compose("eval", overrides=["data=csv", f"data.path={csv}", "data.test_start=2017-01-01",
                                              f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
                                              f"output_dir={tmp_path / 'eval'}", "trainer.enable_progress_bar=false"])
    assert evaluate(eval_cfg)["test/rmse"] == metrics["test/rmse"]


def test_slurm_launcher_config_composes_with_the_trainer_layout() -> None:
    """No cluster here: checks the launcher and trainer configs compose, resolve and instantiate (not a real job)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer=slurm", "trainer.devices=4",
                                          "trainer.num_nodes=2", "hydra.launcher.partition=gpu",
                                          "hydra.launcher.timeout_min=30"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.lstm_zoo_launchers.slurm_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert (launcher["partition"], launcher["timeout_min"]) == ("gpu", 30)
    instantiate(cfg.hydra.launcher)  # the plugin accepts every field
    plugins = {type(p).__name__: p for p in (instantiate(c) for c in cfg.trainer.plugins)}
    assert set(plugins) == {"AtomicCheckpointIO", "SLURMEnvironment"}  # the list replaced cpu.yaml's: both kept
    assert plugins["SLURMEnvironment"].auto_requeue is False
    assert cfg.trainer.strategy._target_ == "lightning.pytorch.strategies.DDPStrategy"


def test_slurm_cpu_launcher_asks_for_one_task_with_cpus_and_no_gpu() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=8"],
                      return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == "hydra_plugins.lstm_zoo_launchers.slurm_launcher.SlurmLauncher"
    assert (launcher["tasks_per_node"], launcher["cpus_per_task"], launcher["gpus_per_node"]) == (1, 8, None)
    assert cfg.trainer.accelerator == "cpu"
    instantiate(cfg.hydra.launcher)


def test_run_reports_the_best_epochs_validation_rmse(fast_cfg) -> None:
    """The sweeper's objective: val/rmse of the best checkpoint, not of the last epoch; no extra curve point."""
    cfg = fast_cfg("trainer.max_epochs=4", "model.optimizer.lr=0.02", "model.init=torch", "model.num_layers=4",
                   "trainer.limit_train_batches=null")
    metrics = run(cfg)
    events = EventAccumulator(str(Path(cfg.output_dir) / "tensorboard")).Reload()
    per_epoch = [e.value for e in events.Scalars("val/rmse")]
    assert len(per_epoch) == 4
    assert per_epoch[-1] > min(per_epoch)  # this seed and lr make the last epoch worse than the best one
    assert metrics["val/rmse"] == pytest.approx(min(per_epoch), rel=1e-5)


def test_eval_reproduces_the_training_runs_test_metrics(fast_cfg, prices_csv: Path, tmp_path: Path) -> None:
    trained = run(fast_cfg("trainer.max_epochs=2"))
    checkpoint = Path(trained["best_checkpoint"])
    assert torch.load(checkpoint, weights_only=True)["forecaster_class"] == "lstm_zoo.models.rnn.RNNForecaster"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # no data.window: the checkpoint has it
        cfg = compose("eval", overrides=[f"ckpt_path={checkpoint}", "data=csv", f"data.path={prices_csv}",
                                         "trainer.enable_progress_bar=false",
                                         f"output_dir={tmp_path / 'eval'}"])
    scored = evaluate(cfg)
    test_keys = [k for k in trained if k.startswith("test/")]
    assert test_keys and {k: scored[k] for k in test_keys} == {k: trained[k] for k in test_keys}
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test/rmse"] == trained["test/rmse"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "eval" / "predictions.csv"),
                                  pd.read_csv(tmp_path / "run" / "predictions.csv"))
    assert (tmp_path / "eval" / "forecast.png").is_file()


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_forecaster_refuses_non_checkpoints_and_crafted_pickles(tmp_path: Path, prices_csv: Path) -> None:
    with pytest.raises(CheckpointError, match=r"prices\.csv: not a checkpoint"):
        load_forecaster(prices_csv)
    with pytest.raises(CheckpointError, match="no checkpoint at .*missing.ckpt"):
        load_forecaster(tmp_path / "missing.ckpt")
    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, tmp_path / "crafted.ckpt")
    with pytest.raises(CheckpointError, match="crafted.ckpt: refused to load"):
        load_forecaster(tmp_path / "crafted.ckpt")
    assert not marker.exists()


@pytest.mark.slow
def test_joblib_sweep_then_leaderboard_lists_seeds_and_failed_runs(real_sweep: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"  # a copy of the shared joblib sweep (model=vanilla,gru x 2 seeds): this test edits it
    shutil.copytree(real_sweep, sweep)
    for gru in sweep.glob("*model-gru*"):
        shutil.rmtree(gru)
    # no Hydra schema-matching deprecation warning from conf/hydra/launcher/joblib.yaml, in no job
    assert "deprecated" not in (real_sweep / "console.log").read_text()
    runs = sorted(p.parent for p in sweep.glob("*/metrics.json"))
    assert len(runs) == 2
    rmses = [json.loads((r / "metrics.json").read_text())["test/rmse"] for r in runs]

    table = compare(sweep, ["model"])
    assert list(table.index) == ["vanilla"] and table.loc["vanilla", "seeds"] == 2
    assert table.loc["vanilla", "rmse_mean"] == pytest.approx(statistics.mean(rmses))
    assert table.loc["vanilla", "rmse_std"] == pytest.approx(statistics.stdev(rmses))
    skills = [1 - m["test/rmse"] / m["test/persistence_rmse"] for m in map(read_metrics, runs)]
    assert table.loc["vanilla", "skill_min"] == pytest.approx(min(skills))
    assert table.loc["vanilla", "dm_pvalue_max"] == max(read_metrics(r)["test/dm_pvalue"] for r in runs)
    frames = [pd.read_csv(r / "predictions.csv") for r in runs]
    steps = (("predicted", "actual"), ("predicted_t+2", "actual_t+2"))  # the shared sweep forecasts 2 days
    errors = pd.concat([(frames[0][p] + frames[1][p]) / 2 - frames[0][a] for p, a in steps])
    by_hand = float(((errors**2).mean()) ** 0.5)
    assert table.loc["vanilla", "ensemble_rmse"] == pytest.approx(by_hand, rel=1e-9)
    # the seed-ensemble table (what scripts/ensemble.py printed): each seed's skill and DM p, validation first
    ensembles = pd.read_csv(sweep / "leaderboard_ensembles.csv", index_col="model")
    assert ensembles.loc["vanilla", "runs"] == 2 and ensembles.loc["vanilla", "ensemble_rmse"] == table.loc[
        "vanilla", "ensemble_rmse"]
    assert ensembles.loc["vanilla", "skill_per_seed"].split() == [f"{read_metrics(r)['test/skill']:+.4f}" for r in runs]
    assert ensembles.loc["vanilla", "val_rmse"] == pytest.approx(statistics.mean(read_metrics(r)["val/rmse"]
                                                                                 for r in runs))
    assert "Seed ensembles" in (sweep / "leaderboard.md").read_text()
    beats = "yes" if min(skills) > 0 else "no"
    assert f"| {beats} |" in (sweep / "leaderboard.md").read_text()  # the "skill > 0 on every seed" column
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.png", "predictions.png"):
        assert (sweep / name).is_file(), name
    assert len(compare(sweep, ["seed"])) == 2

    (runs[1] / "metrics.json").unlink()  # as if the job had been killed
    table = compare(sweep, ["model"])
    assert (table.loc["vanilla", "seeds"], table.loc["vanilla", "failed"]) == (1, 1)
    assert table.loc["vanilla", "rmse_mean"] == rmses[0] and math.isnan(table.loc["vanilla", "rmse_std"])
    assert f"{runs[1].name}: failed: no metrics.json" in (sweep / "leaderboard.md").read_text()


@pytest.mark.slow
def test_optuna_search_records_the_best_trial(prices_csv: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "optuna"
    run_main("train.py", ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "data=csv",
                          f"data.path={prices_csv}", "debug=fast", "data.window=10",
                          "model.hidden_size=8",  # fixed on the command line
                          f"hydra.sweep.dir={sweep}"], check=True)
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(trials) == 2 and all(t["status"] == "completed" for t in trials)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"model.optimizer.lr", "model.num_layers", "model.dropout"}
    assert results["best_value"] == pytest.approx(min(t["val/rmse"] for t in trials))
