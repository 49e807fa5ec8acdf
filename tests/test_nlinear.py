"""NLinear (lstm_zoo/models/nlinear.py): a shifted window shifts a level forecast by the shift, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from lstm_zoo.errors import ConfigError
from lstm_zoo.models.nlinear import NLinearForecaster
from tests.helpers import compose_train


def trained_looking(**kwargs) -> NLinearForecaster:
    """An NLinear with random weights and bias (a fresh one has zeros: nothing to shift)."""
    torch.manual_seed(0)
    model = NLinearForecaster(window=12, **kwargs).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    return model


@pytest.mark.parametrize("quantiles", [None, [0.1, 0.5, 0.9]])
def test_a_constant_added_to_the_window_shifts_a_level_forecast_by_that_constant(quantiles):
    model = trained_looking(n_features=2, horizon=3, features=["Low", "High"], target="High", quantiles=quantiles)
    x = torch.randn(5, 12, 2, dtype=torch.float64)
    model.double()
    with torch.no_grad():
        forecast, shifted = model.forecast(x), model.forecast(x + 0.7)
        other = model.forecast(x + torch.tensor([0.7, 0.0], dtype=torch.float64))  # only Low moves, not the target
    assert not torch.allclose(forecast, torch.zeros_like(forecast))
    torch.testing.assert_close(shifted, forecast + 0.7)  # every step (and every quantile) moves by 0.7
    assert not torch.allclose(other, forecast + 0.7)  # the level added back is the target's (High), not Low's


def test_a_change_target_forecast_does_not_move_with_the_level():
    model = trained_looking(n_features=1, horizon=2, target_transform="diff").double()
    x = torch.randn(4, 12, 1, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x + 3.0), model(x))
        assert not torch.allclose(model(x * 2), model(x))  # it does read the window's shape


@pytest.mark.parametrize(("transform", "persistence"), [("level", "last"), ("diff", "zero"), ("log_return", "zero")])
def test_a_fresh_model_forecasts_persistence(transform: str, persistence: str):
    """Zero weights: the last target value for level targets, a change of 0 for diff/log_return targets."""
    model = NLinearForecaster(n_features=2, horizon=4, window=12, features=["High", "Low"],
                              target_transform=transform)
    x = torch.randn(3, 12, 2)
    expected = x[:, -1, :1].expand(3, 4) if persistence == "last" else torch.zeros(3, 4)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_the_yaml_reads_the_target_and_transform_from_the_data_config(tmp_path: Path):
    cfg = compose_train(["model=nlinear", "data.features=[Low,High]", "data.target_transform=diff"], tmp_path)
    model = instantiate(cfg.model, n_features=2, horizon=1, window=12, _convert_="all")
    assert (model.hparams.features, model.hparams.target, model.hparams.target_transform) == (["Low", "High"],
                                                                                              "High", "diff")
    level = instantiate(compose_train(["model=nlinear", "data.features=[Low,High]"], tmp_path).model,
                        n_features=2, horizon=1, window=12, _convert_="all")
    assert level.target_feature == 1


def test_a_level_target_outside_the_window_is_a_config_error():
    with pytest.raises(ConfigError, match=r"leaves High out of the window\. Fix: add High to data\.features"):
        NLinearForecaster(n_features=1, features=["Low"], target="High")
    NLinearForecaster(n_features=1, features=["Low"], target="High", target_transform="diff")  # nothing added back
    with pytest.raises(ConfigError, match=r"model\.features=\['High'\] has 1 columns but the window has 2"):
        NLinearForecaster(n_features=2, features=["High"])
