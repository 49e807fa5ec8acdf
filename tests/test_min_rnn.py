"""minGRU and minLSTM: the paper's equations, three exact modes (sequential, parallel, reference), gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import lstm_zoo.models.min_rnn as min_rnn
from lstm_zoo.errors import ConfigError, user_error
from lstm_zoo.models import MinGRU, MinLSTM, MinRNNForecaster
from lstm_zoo.pipeline import run
from tests.conftest import CONF

CELLS = {"min_gru": MinGRU, "min_lstm": MinLSTM}


def layer(cell: str, mode: str = "sequential", dtype=torch.float64, input_size: int = 3, hidden: int = 5,
          batch_first: bool = True) -> min_rnn.MinRNN:
    torch.manual_seed(0)
    return CELLS[cell](input_size, hidden, batch_first=batch_first, mode=mode).to(dtype)


def outputs_and_gradients(module: torch.nn.Module, x: torch.Tensor, h0: torch.Tensor | None) -> list[torch.Tensor]:
    out, h_n = module(x, h0)
    loss = (out * torch.arange(1, out.shape[-1] + 1, dtype=x.dtype)).sum() + (h_n**2).sum()  # every step and h_n
    inputs = [x] + ([h0] if h0 is not None else [])
    return [out, h_n, *torch.autograd.grad(loss, [*inputs, *module.parameters()])]


def assert_agree(got: list[torch.Tensor], want: list[torch.Tensor], tol: float) -> None:
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * b.abs().max().item(), msg=f"tensor {k}")
        assert b.abs().max() > 0, f"tensor {k} is all zeros"


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", ["sequential", "parallel"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-6)])
@pytest.mark.parametrize("with_h0", [True, False])
def test_modes_equal_the_reference_with_every_gradient(cell: str, mode: str, dtype, tol: float, with_h0: bool):
    """A 60-step window as in the zoo: outputs, h_n and the grads of x, h0 and every parameter."""
    reference, fast = layer(cell, "reference", dtype), layer(cell, mode, dtype)
    torch.manual_seed(1)
    x = torch.randn(4, 60, 3, dtype=dtype, requires_grad=True)
    h0 = torch.randn(1, 4, 5, dtype=dtype, requires_grad=True) if with_h0 else None  # any sign, also for parallel
    assert_agree(outputs_and_gradients(fast, x, h0), outputs_and_gradients(reference, x, h0), tol)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_modes_pass_gradcheck(cell: str, mode: str):
    module = layer(cell, mode, input_size=2, hidden=2, batch_first=False)
    x = torch.randn(5, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, h: module(inp, h)[0].pow(2).sum() + module(inp, h)[1].sum(), (x, h0))


@pytest.mark.parametrize("cell", CELLS)
def test_reference_is_the_papers_recurrence_written_in_numpy(cell: str):
    module = layer(cell, "reference")
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    w, b = module.linear.weight.detach().numpy(), module.linear.bias.detach().numpy()
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h = np.zeros((2, 5))
    for t in range(6):
        blocks = np.split(x[:, t].numpy() @ w.T + b, module.gates, axis=1)
        cand = np.where(blocks[-1] >= 0, blocks[-1] + 0.5, sigmoid(blocks[-1]))  # g: positive, continuous
        if cell == "min_gru":
            z = sigmoid(blocks[0])
            h = (1 - z) * h + z * cand
        else:
            f, i = sigmoid(blocks[0]), sigmoid(blocks[1])
            h = f / (f + i) * h + i / (f + i) * cand
        np.testing.assert_allclose(module(x)[0][:, t].detach().numpy(), h, rtol=1e-12)


def test_the_update_gate_decides_between_memory_and_the_new_candidate():
    module = layer("min_gru", hidden=4, input_size=1)
    x, h0 = torch.randn(3, 5, 1, dtype=torch.float64), torch.rand(1, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        module.linear.bias[:4] = -50.0  # z = sigmoid(-50): the state is kept
        assert torch.allclose(module(x, h0)[0], h0[0].unsqueeze(1).expand(3, 5, 4), atol=1e-15)
        module.linear.bias[:4] = 50.0  # z = 1: every step is its own candidate g(W_h x + b_h)
        k = x @ module.linear.weight[4:].T + module.linear.bias[4:]
        torch.testing.assert_close(module(x, h0)[0], torch.where(k >= 0, k + 0.5, torch.sigmoid(k)))


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_min_lstm_stays_finite_where_both_gates_underflow(mode: str):
    """f = i = 0 in float32 (pre-activations below -88): z = i / (f + i) is 0/0, the layer falls back to
    sigmoid(log i - log f) and agrees with the float64 computation."""
    module = layer("min_lstm", mode, torch.float32, input_size=1, hidden=2)
    with torch.no_grad():
        module.linear.weight.zero_()
        module.linear.bias.copy_(torch.tensor([-100.0, -95.0, -93.0, -100.0, 1.0, -1.0]))  # f, f, i, i, cand
    x = torch.randn(2, 8, 1, requires_grad=True)
    out = module(x)[0]
    assert torch.isfinite(out).all()
    double = layer("min_lstm", "parallel", input_size=1, hidden=2)
    double.load_state_dict({k: v.double() for k, v in module.state_dict().items()})
    torch.testing.assert_close(out.double(), double(x.double())[0], rtol=1e-6, atol=1e-7)
    out.sum().backward()
    assert torch.isfinite(module.linear.weight.grad).all()


def test_parallel_mode_keeps_float32_precision_on_a_long_window():
    """The log-space sums grow with the window and cancel; accumulated in float64 they stay at 1e-6."""
    sequential, parallel = layer("min_gru", dtype=torch.float32), layer("min_gru", "parallel", torch.float32)
    x = torch.randn(2, 500, 3)
    assert_agree([parallel(x)[0]], [sequential(x)[0]], 1e-6)


def test_eager_fallback_of_the_scan_loops_matches_torchscript(monkeypatch):
    module = layer("min_lstm")
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    want = outputs_and_gradients(module, x, None)
    monkeypatch.setattr(min_rnn, "_scan_forward_impl", min_rnn._scan_forward)
    monkeypatch.setattr(min_rnn, "_scan_backward_impl", min_rnn._scan_backward)
    assert_agree(outputs_and_gradients(module, x, None), want, 1e-14)


@pytest.mark.parametrize("cell", CELLS)
def test_forecaster_has_the_closed_form_parameter_count(cell: str):
    gates = CELLS[cell].gates  # one projection per layer (no recurrent weights), then the linear head
    model = MinRNNForecaster(cell=cell, hidden_size=50, num_layers=4)
    assert model.num_parameters == gates * 50 * (1 + 1) + 3 * gates * 50 * (50 + 1) + 51


def test_unknown_mode_is_one_config_error_naming_the_field(fast_cfg):
    with pytest.raises(ConfigError, match=r"model\.mode='scan' is not one of \['sequential', 'parallel', 'refer"):
        MinRNNForecaster(mode="scan")
    with pytest.raises(Exception) as err:  # through Hydra's instantiate, as train.py reports it
        run(fast_cfg("model=min_lstm", "model.mode=scan"))
    assert isinstance(user_error(err.value), ConfigError)


def test_min_configs_have_the_stacked_shape_and_the_sequential_mode():
    for name in CELLS:
        cfg = OmegaConf.load(CONF / "model" / f"{name}.yaml")
        assert (cfg.cell, cfg.mode, cfg.hidden_size, cfg.num_layers, cfg.dropout) == (name, "sequential", 50, 4, 0.2)
