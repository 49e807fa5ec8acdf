"""Every option of every config group composes, and the CPU-runnable ones instantiate."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from conftest import CONF, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lstm_zoo.checks import check_config
from lstm_zoo.data import StockDataModule
from lstm_zoo.errors import ConfigError
from lstm_zoo.models import FittedForecaster, Forecaster


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_defaults_are_the_tutorial_setup(tmp_path):
    cfg = compose_train(output_dir=tmp_path)
    assert cfg.model.hidden_size == 50 and cfg.model.num_layers == 4 and cfg.model.dropout == 0.2
    assert cfg.data.window == 60 and cfg.data.horizon == 1 and cfg.data.batch_size == 32
    assert cfg.data.target == "High" and list(cfg.data.features) == ["High"]
    assert cfg.trainer.max_epochs == 20 and cfg.model.optimizer._target_ == "lstm_zoo.optim.KerasRMSprop"


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_instantiates_a_forecaster(tmp_path, model):
    cfg = compose_train([f"model={model}"], tmp_path)
    forecaster = instantiate(cfg.model, n_features=1, horizon=1, window=60, _convert_="all")
    assert isinstance(forecaster, Forecaster)
    if isinstance(forecaster, FittedForecaster):  # a baseline forecasts once fit on data (tests/test_baselines.py)
        with pytest.raises(RuntimeError, match="not fit yet"):
            forecaster(torch.randn(2, 60, 1))
        return
    assert forecaster(torch.randn(2, 60, 1)).shape == (2, 1)


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_optimizer_group_lands_in_the_model_as_a_partial(tmp_path, optimizer):
    cfg = compose_train([f"optimizer={optimizer}"], tmp_path)
    factory = instantiate(cfg.model.optimizer)
    assert isinstance(factory, functools.partial)
    assert isinstance(factory([torch.nn.Parameter(torch.zeros(1))]), torch.optim.Optimizer)


@pytest.mark.parametrize("data", [d for d in options("data") if d != "checkpoint"])  # checkpoint: eval/predict only
def test_every_data_config_instantiates(tmp_path, prices_csv, data):
    cfg = compose_train([f"data={data}", f"data.path={prices_csv}" if data == "csv" else "data.path=null"], tmp_path)
    assert isinstance(instantiate(cfg.data), StockDataModule)


def test_csv_data_requires_a_path(tmp_path):
    cfg = compose_train(["data=csv"], tmp_path)
    with pytest.raises(Exception, match="Missing mandatory value: data.path"):
        instantiate(cfg.data)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_config_composes(tmp_path, trainer):
    cfg = compose_train([f"trainer={trainer}"], tmp_path)
    assert cfg.trainer.max_epochs == 20 and cfg.trainer.default_root_dir == str(tmp_path)
    expected = {"cpu": "cpu", "gpu": "gpu", "ddp": "auto"}
    assert cfg.trainer.accelerator == expected.get(trainer, cfg.trainer.accelerator)
    if trainer == "cpu":
        assert isinstance(instantiate(cfg.trainer, logger=False), L.Trainer)


def test_callbacks_and_logger_instantiate_into_the_run_folder(tmp_path):
    cfg = compose_train([], tmp_path)
    callbacks = {name: instantiate(c) for name, c in cfg.callbacks.items()}
    assert callbacks["checkpoint"].dirpath == str(tmp_path / "checkpoints")
    assert instantiate(cfg.logger).log_dir.startswith(str(tmp_path))


def test_a_misspelled_key_fails_at_composition(tmp_path):
    with pytest.raises(Exception, match="hiden_size"):
        compose_train(["model.hiden_size=3"], tmp_path)


def test_the_tutorial_without_a_csv_is_a_one_line_error_naming_data_path(tmp_path):
    for overrides in (["experiment=tutorial"], ["data=csv"]):
        with pytest.raises(ConfigError) as err:
            check_config(compose_train(overrides, tmp_path))
        assert str(err.value) == ("data.path is not set: data=csv and experiment=tutorial read a CSV file. Fix: "
                                  "data.path=/path/to/file.csv, e.g. the tutorial's IBM_2006-01-01_to_2018-01-01.csv")


def check_as_train_py(overrides: list[str]) -> None:
    """check_config on the config of `python train.py <overrides>`, with Hydra's runtime info (the group choices)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        check_config(cfg)
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.parametrize("data", ["ibm", "stocks"])
def test_a_csv_path_on_the_embedded_data_is_an_error_naming_data_csv(prices_csv, data):
    with pytest.raises(ConfigError, match=rf"^data\.path={prices_csv} is set, but data={data} is the embedded "
                                          rf"bokeh_sampledata series, with its split \(train to 2011-12-31, test from "
                                          rf"2012-01-01\)\. Fix: data=csv data\.path={prices_csv}$"):
        check_as_train_py([f"data={data}", f"data.path={prices_csv}"])
    check_as_train_py([f"data={data}"])
    check_as_train_py(["data=csv", f"data.path={prices_csv}"])  # the right way


def test_model_lstm_is_the_tutorials_stacked_lstm(tmp_path):
    lstm, stacked = (compose_train([f"model={name}"], tmp_path).model for name in ("lstm", "stacked"))
    assert lstm == stacked and (stacked.cell, stacked.num_layers, stacked.hidden_size) == ("lstm", 4, 50)
    torch.manual_seed(0)
    a = instantiate(lstm, n_features=1, horizon=1, window=60, _convert_="all")
    torch.manual_seed(0)
    b = instantiate(stacked, n_features=1, horizon=1, window=60, _convert_="all")
    assert type(a) is type(b) and a.num_parameters == 71_051
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert compose_train(["model=lstm", "model.hidden_size=8"], tmp_path).model.hidden_size == 8  # overrides apply


@pytest.mark.parametrize("data", sorted(p.stem for p in (CONF / "data").glob("*.yaml")
                                        if p.stem not in ("ibm", "csv", "checkpoint")))  # checkpoint: eval/predict
def test_data_configs_inherit_ibm_and_keep_only_their_differences(data):
    own = OmegaConf.to_container(OmegaConf.load(CONF / "data" / f"{data}.yaml"))
    base = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "ibm.yaml"))
    assert own["defaults"] == ["ibm", "_self_"]
    same = [k for k in own if k != "defaults" and k in base and own[k] == base[k]]
    assert not same, f"conf/data/{data}.yaml repeats data=ibm's {same}"
