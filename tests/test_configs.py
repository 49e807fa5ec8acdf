"""Every option of every config group composes, and the CPU-runnable ones instantiate."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from conftest import CONF, compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lstm_zoo.data import StockDataModule
from lstm_zoo.models import Forecaster


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
    assert forecaster(torch.randn(2, 60, 1)).shape == (2, 1)


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_optimizer_group_lands_in_the_model_as_a_partial(tmp_path, optimizer):
    cfg = compose_train([f"optimizer={optimizer}"], tmp_path)
    factory = instantiate(cfg.model.optimizer)
    assert isinstance(factory, functools.partial)
    assert isinstance(factory([torch.nn.Parameter(torch.zeros(1))]), torch.optim.Optimizer)


@pytest.mark.parametrize("data", options("data"))
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


@pytest.mark.parametrize("data", sorted(p.stem for p in (CONF / "data").glob("*.yaml") if p.stem not in ("ibm", "csv")))
def test_data_configs_inherit_ibm_and_keep_only_their_differences(data):
    own = OmegaConf.to_container(OmegaConf.load(CONF / "data" / f"{data}.yaml"))
    base = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "ibm.yaml"))
    assert own["defaults"] == ["ibm", "_self_"]
    same = [k for k in own if k != "defaults" and k in base and own[k] == base[k]]
    assert not same, f"conf/data/{data}.yaml repeats data=ibm's {same}"
