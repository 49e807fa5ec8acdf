"""build(cfg): the data module, model and trainer a run trains, from its config, checked and seeded first."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lstm_zoo.build import build
from lstm_zoo.callbacks import EpochLog
from lstm_zoo.data import StockDataModule
from lstm_zoo.errors import ConfigError
from lstm_zoo.models import Forecaster
from lstm_zoo.timing import EpochTimer


def test_build_makes_the_objects_of_the_config_sized_to_the_data(fast_cfg, tmp_path) -> None:
    timer = EpochTimer()
    datamodule, model, trainer = build(fast_cfg("data.horizon=3", "data.features=[High,Low]"), callbacks=[timer])
    assert isinstance(datamodule, StockDataModule) and isinstance(model, Forecaster)
    assert (model.hparams.n_features, model.hparams.window, model.hparams.horizon) == \
        (2, datamodule.window, datamodule.horizon) == (2, datamodule.window, 3)
    assert timer in trainer.callbacks and any(isinstance(c, ModelCheckpoint) for c in trainer.callbacks)
    assert trainer.logger.log_dir.startswith(str(tmp_path / "run"))


def test_a_trainer_times_its_epochs_once(fast_cfg) -> None:
    """The config's EpochLog is the trainer's one EpochTimer (what it logs is what metrics.json records); without
    it, build adds a plain EpochTimer, so `timing` never depends on the log line."""
    trainer = build(fast_cfg())[2]
    assert [type(c) for c in trainer.callbacks if isinstance(c, EpochTimer)] == [EpochLog]
    trainer = build(fast_cfg("~callbacks.epoch_log"))[2]
    assert [type(c) for c in trainer.callbacks if isinstance(c, EpochTimer)] == [EpochTimer]


def test_build_sets_the_seed_so_a_config_builds_the_same_model(fast_cfg) -> None:
    first, second = build(fast_cfg("seed=3"))[1], build(fast_cfg("seed=3"))[1]
    other = build(fast_cfg("seed=4"))[1]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))


def test_build_checks_the_config_before_building(fast_cfg) -> None:
    with pytest.raises(ConfigError, match=r"model\.dropout=1\.5 is out of range"):
        build(fast_cfg("model.dropout=1.5"))
