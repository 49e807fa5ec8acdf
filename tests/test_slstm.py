"""sLSTM: the fused recurrence (normalized state) equals the paper's stabilized equations, gradients included."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import lstm_zoo.models.slstm as slstm
from lstm_zoo.errors import ConfigError, user_error
from lstm_zoo.models import SLSTM, SLSTMForecaster
from lstm_zoo.pipeline import run


def layer(mode: str = "sequential", heads: int = 2, forget_gate: str = "sigmoid", dtype=torch.float64,
          hidden: int = 6, input_size: int = 3) -> SLSTM:
    torch.manual_seed(0)
    return SLSTM(input_size, hidden, num_heads=heads, batch_first=True, mode=mode, forget_gate=forget_gate).to(dtype)


def invariants(module: SLSTM, x: torch.Tensor, state=None) -> list[torch.Tensor]:
    """Outputs, h_n, and the state up to the stabilizer's scale: c/n and m + log n."""
    out, (h, c, n, m) = module(x, state)
    return [out, h, c / n, m + n.log()]


def outputs_and_gradients(module: SLSTM, x: torch.Tensor, state=None) -> list[torch.Tensor]:
    values = invariants(module, x, state)
    loss = (values[0] * torch.arange(1, module.hidden_size + 1, dtype=x.dtype)).sum() + (values[1] ** 2).sum()
    inputs = [x] + [s for s in state or () if s.requires_grad]
    return [*values, *torch.autograd.grad(loss, [*inputs, *module.parameters()])]


def assert_agree(got: list[torch.Tensor], want: list[torch.Tensor], tol: float) -> None:
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * b.abs().max().item(), msg=f"tensor {k}")


@pytest.mark.parametrize("heads", [1, 2, 3])
@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-6)])
def test_fused_recurrence_equals_the_papers_equations(heads: int, forget_gate: str, dtype, tol: float):
    reference, fused = layer("reference", heads, forget_gate, dtype), layer("sequential", heads, forget_gate, dtype)
    torch.manual_seed(1)
    x = torch.randn(4, 60, 3, dtype=dtype, requires_grad=True)
    assert_agree(outputs_and_gradients(fused, x), outputs_and_gradients(reference, x), tol)


def test_a_given_state_is_continued_exactly_with_its_gradients():
    """(h0, c0, n0, m0) as the paper defines them, with the gradients of all four; a zero state is a fresh one."""
    reference, fused = layer("reference"), layer("sequential")
    torch.manual_seed(2)
    x = torch.randn(3, 20, 3, dtype=torch.float64, requires_grad=True)
    h0, c0 = torch.randn(1, 3, 6, dtype=torch.float64), torch.randn(1, 3, 6, dtype=torch.float64)
    n0, m0 = torch.rand(1, 3, 6, dtype=torch.float64) + 0.5, torch.randn(1, 3, 6, dtype=torch.float64)
    state = tuple(s.requires_grad_() for s in (h0, c0, n0, m0))
    assert_agree(outputs_and_gradients(fused, x, state), outputs_and_gradients(reference, x, state), 1e-10)
    zeros = torch.zeros(1, 3, 6, dtype=torch.float64)
    assert_agree(invariants(fused, x, (zeros,) * 4), invariants(fused, x), 1e-15)
    assert_agree(invariants(reference, x, (zeros,) * 4), invariants(fused, x), 1e-10)


def test_passes_gradcheck():
    module = layer(hidden=4, input_size=2)
    x = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: module(inp)[0].pow(2).sum() + module(inp)[1][3].sum(), (x,))


def test_heads_mix_only_their_own_units():
    """K heads equal one head whose recurrent matrix is the block-diagonal of the K blocks (dense math)."""
    heads = layer("sequential", heads=3)
    dense = layer("reference", heads=1)
    state = heads.state_dict()
    blocks = state["weight_hh_l0"].view(3, 4, 2, 2)  # [head, gate, row, column]
    state["weight_hh_l0"] = torch.stack([torch.block_diag(*blocks[:, g]) for g in range(4)]).view(1, 24, 6)
    dense.load_state_dict(state)
    x = torch.randn(2, 15, 3, dtype=torch.float64)
    assert_agree(invariants(heads, x), invariants(dense, x), 1e-12)


def test_one_step_matches_a_hand_computation():
    module = layer("sequential", heads=1)
    x = torch.randn(2, 1, 3, dtype=torch.float64)
    p = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    # h0 = 0, and the forget gate multiplies c0 = n0 = 0
    i, _, z, o = np.split(x[:, 0].numpy() @ p["weight_ih_l0"].T + p["bias_ih_l0"], 4, axis=1)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c, n = np.exp(i) * np.tanh(z), np.exp(i)  # fresh state: c0 = n0 = 0
    out, (h, c_n, n_n, m_n) = module(x)
    np.testing.assert_allclose(out[:, 0].detach().numpy(), sigmoid(o) * c / n, rtol=1e-12)
    np.testing.assert_allclose((c_n / n_n)[0].detach().numpy(), c / n, rtol=1e-12)
    np.testing.assert_allclose((m_n + n_n.log())[0].detach().numpy(), np.log(n), rtol=1e-12)


@pytest.mark.parametrize("mode", ["sequential", "reference"])
def test_exponential_gates_do_not_overflow(mode: str):
    """Input-gate pre-activations of +-200 in float32 (exp overflows at 89): the stabilizer keeps h finite."""
    module = layer(mode, forget_gate="exp", dtype=torch.float32)
    with torch.no_grad():
        module.bias_ih_l0[:6] = torch.tensor([200.0, -200.0, 150.0, 0.0, 100.0, -100.0])  # input gate
        module.bias_ih_l0[6:12] = 120.0  # forget gate exp(120)
    x = torch.randn(2, 30, 3, requires_grad=True)
    out = module(x)[0]
    assert torch.isfinite(out).all() and (out.abs() <= 1).all()  # |o tanh-weighted mean| <= 1
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_eager_fallback_of_the_fused_loops_matches_torchscript(monkeypatch):
    module = layer()
    x = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    want = outputs_and_gradients(module, x)
    monkeypatch.setattr(slstm, "_forward_impl", slstm._fused_forward)
    monkeypatch.setattr(slstm, "_backward_impl", slstm._fused_backward)
    assert_agree(outputs_and_gradients(module, x), want, 1e-14)


def test_forecaster_parameter_count_and_keras_init():
    model = SLSTMForecaster(hidden_size=50, num_layers=4, num_heads=2)
    per_layer = [4 * 50 * inputs + 2 * 100 * 25 + 4 * 50 for inputs in (1, 50, 50, 50)]  # W, 2 blocks, one bias
    assert model.num_parameters == sum(per_layer) + 51
    second = model.layers[1]
    for block in second.weight_hh_l0:  # (4 * 25, 25), orthonormal columns per head
        torch.testing.assert_close(block.T @ block, torch.eye(25), atol=1e-5, rtol=0)
    assert (second.bias_ih_l0[50:100] == 1).all() and not second.bias_ih_l0[:50].any()  # forget bias 1


@pytest.mark.parametrize(("override", "message"), [
    ("model.num_heads=3", r"model\.num_heads=3 must divide model\.hidden_size=8: one of \[1, 2, 4, 8\]"),
    ("model.mode=parallel", r"model\.mode='parallel' is not one of \['sequential', 'reference'\]"),
    ("model.forget_gate=tanh", r"model\.forget_gate='tanh' is not one of \['sigmoid', 'exp'\]"),
    ("model.num_heads=0", r"model\.num_heads=0 is out of range: it must be an integer >= 1"),
])
def test_bad_fields_are_one_config_error_naming_the_field(fast_cfg, override: str, message: str):
    with pytest.raises(Exception) as err:
        run(fast_cfg("model=slstm", override))
    cause = user_error(err.value)
    assert isinstance(cause, ConfigError) and "\n" not in str(cause)
    assert re.search(message, str(cause)), str(cause)


def test_the_loops_run_single_threaded_and_restore_the_thread_count(monkeypatch):
    module, previous, seen = layer(), torch.get_num_threads(), []

    def recording(impl):
        return lambda *args: (seen.append(torch.get_num_threads()), impl(*args))[1]

    monkeypatch.setattr(slstm, "_forward_impl", recording(slstm._forward_impl))
    monkeypatch.setattr(slstm, "_backward_impl", recording(slstm._backward_impl))
    torch.set_num_threads(2)  # tests/conftest.py runs the tests on one thread: start from two, or this cannot fail
    try:
        module(torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True))[0].sum().backward()
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
