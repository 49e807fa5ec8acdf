"""RNNForecaster (vanilla, stacked, gru): Keras-faithful dropout, LSTM vs GRU sizes, learning."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from lstm_zoo.errors import ConfigError
from lstm_zoo.models import RNNForecaster
from tests.conftest import compose_train


def recurrent_parameters(model: RNNForecaster) -> int:
    return sum(p.numel() for p in model.layers.parameters())


def test_gru_has_three_quarters_of_the_lstm_recurrent_parameters():
    lstm = RNNForecaster(cell="lstm", hidden_size=50, num_layers=4, n_features=3)
    gru = RNNForecaster(cell="gru", hidden_size=50, num_layers=4, n_features=3)
    assert recurrent_parameters(gru) * 4 == recurrent_parameters(lstm) * 3  # 3 gates' weights vs 4


def test_stacked_default_matches_the_tutorial_parameter_count():
    # Keras summary of the tutorial: 10,400 + 3 x 20,200 + 51: one bias per gate (torch's nn.LSTM has two)
    model = RNNForecaster(cell="lstm", hidden_size=50, num_layers=4, dropout=0.2)
    assert model.num_parameters == 10_400 + 3 * 20_200 + 51
    torch_init = RNNForecaster(cell="lstm", hidden_size=50, num_layers=4, dropout=0.2, init="torch")
    assert torch_init.num_parameters == 10_400 + 3 * 20_200 + 51 + 4 * 4 * 50


def test_dropout_follows_every_layer_including_the_last_like_keras():
    torch.manual_seed(0)
    model = RNNForecaster(num_layers=1, hidden_size=16, dropout=0.5)
    x = torch.randn(4, 12, 1)
    model.train()
    assert not torch.equal(model(x), model(x))  # nn.LSTM(dropout=...) would drop nothing with one layer
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("horizon", [1, 5])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_output_is_batch_by_horizon(cell, horizon):
    model = RNNForecaster(cell=cell, hidden_size=8, num_layers=2, n_features=3, horizon=horizon)
    assert model(torch.randn(7, 20, 3)).shape == (7, horizon)


def test_bidirectional_head_sees_the_backward_final_state():
    torch.manual_seed(0)
    model = RNNForecaster(hidden_size=8, num_layers=1, dropout=0.0, bidirectional=True).eval()
    x = torch.randn(2, 15, 1)
    changed = x.clone()
    changed[:, 0] += 5.0  # only the oldest day: the forward state at the last step barely sees it
    with torch.no_grad():
        out = model.layers[0](x)[0]
        out_changed = model.layers[0](changed)[0]
    assert not torch.allclose(out[:, 0, 8:], out_changed[:, 0, 8:])  # the backward final state moved
    assert model.head.in_features == 16


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_overfits_one_small_batch(cell):
    torch.manual_seed(0)
    model = RNNForecaster(cell=cell, hidden_size=32, num_layers=2, dropout=0.0, horizon=2)
    x, y = torch.rand(16, 10, 1), torch.rand(16, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(300):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_out_of_range_dropout_is_refused():
    with pytest.raises(ConfigError, match=r"model.dropout=1.0 is out of range"):
        RNNForecaster(dropout=1.0)


def test_keras_init_sets_the_forget_gate_bias_and_orthogonal_recurrent_weights():
    model = RNNForecaster(cell="lstm", hidden_size=8, num_layers=2)  # init="keras" is the default
    layer = model.layers[1]
    assert torch.equal(layer.bias_ih_l0[8:16], torch.ones(8)) and not layer.bias_ih_l0[:8].any()
    assert not layer.bias_hh_l0.any() and not layer.bias_hh_l0.requires_grad
    w = layer.weight_hh_l0  # (4H, H) with orthonormal columns
    assert torch.allclose(w.T @ w, torch.eye(8), atol=1e-5)
    torch_default = RNNForecaster(cell="lstm", hidden_size=8, num_layers=2, init="torch")
    assert torch_default.layers[1].bias_hh_l0.any()


@pytest.mark.parametrize(("init", "moves"), [("keras", 1), ("torch", 2)])
def test_an_lstm_gate_bias_moves_one_keras_step_per_update_with_one_bias(init: str, moves: int):
    """nn.LSTM's bias_ih and bias_hh get the same gradient, so under RMSprop their sum moves two steps per update;
    Keras init trains one bias per gate, which moves one: lr * g / sqrt((1 - rho) g^2 + eps) on the first step."""
    torch.manual_seed(0)
    model = RNNForecaster(cell="lstm", hidden_size=4, num_layers=1, dropout=0.0, init=init)
    layer = model.layers[0]
    before = (layer.bias_ih_l0 + layer.bias_hh_l0).detach().clone()
    optimizer = model.configure_optimizers()
    x, y = torch.randn(8, 6, 1), torch.randn(8, 1)
    nn.functional.mse_loss(model(x), y).backward()
    grad = layer.bias_ih_l0.grad.clone()
    optimizer.step()
    lr, rho, eps = 1e-3, 0.9, 1e-7  # lstm_zoo.optim.KerasRMSprop's defaults
    one_step = lr * grad / torch.sqrt((1 - rho) * grad**2 + eps)
    torch.testing.assert_close(before - (layer.bias_ih_l0 + layer.bias_hh_l0).detach(), moves * one_step)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert (id(layer.bias_hh_l0) in trained) == (init == "torch")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_last_layer_dropout_acts_on_the_final_state_only(bidirectional):
    """Keras' last LSTM returns only its final state, and its Dropout sees only that: (B, directions * H)."""
    model = RNNForecaster(hidden_size=6, num_layers=3, dropout=0.3, bidirectional=bidirectional).train()
    shapes = []
    model.dropout.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    model(torch.randn(4, 9, 1))
    width = 12 if bidirectional else 6
    assert shapes == [(4, 9, width), (4, 9, width), (4, width)]


def test_val_loss_is_the_mean_over_all_windows_and_a_nan_batch_keeps_it_nan(prices_csv):
    """val/loss, accumulated per batch and logged once per epoch, equals the MSE over every validation window at
    once; one batch of NaN forecasts makes it NaN (never the mean of the finite batches), so the run stops."""
    cfg = compose_train(["data=csv", f"data.path={prices_csv}", "data.window=10", "data.batch_size=7"])
    dm = instantiate(cfg.data)
    dm.setup("fit")
    torch.manual_seed(0)
    model = RNNForecaster(hidden_size=4, num_layers=1, n_features=dm.n_features, horizon=dm.horizon, window=10)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False)
    val = dm.datasets["val"]
    assert len(val) > 3 * 7  # several batches, the last one partial unless the count divides
    x, y = val[torch.arange(len(val))][:2]
    with torch.no_grad():
        expected = nn.functional.mse_loss(model.eval()(x), y).item()
    assert trainer.validate(model, datamodule=dm, verbose=False)[0]["val/loss"] == pytest.approx(expected, rel=1e-5)

    forward, calls = model.forward, []

    def nan_in_the_second_batch(inputs: torch.Tensor) -> torch.Tensor:
        calls.append(len(inputs))
        out = forward(inputs)
        return out * float("nan") if len(calls) == 2 else out

    model.forward = nan_in_the_second_batch
    result = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert len(calls) > 2 and result["val/loss"] != result["val/loss"]  # NaN
