"""FusedGRU: nn.GRU's parameters and results, with a fused CPU recurrence and a hand-written backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lstm_zoo.models.gru as gru_module
from lstm_zoo.models import FusedGRU, RNNForecaster


def twins(input_size: int = 3, hidden: int = 5, **kwargs) -> tuple[FusedGRU, nn.GRU]:
    """A FusedGRU and an nn.GRU with the same (float64) weights."""
    torch.manual_seed(0)
    reference = nn.GRU(input_size, hidden, **kwargs).double()
    fused = FusedGRU(input_size, hidden, **kwargs).double()
    fused.load_state_dict(reference.state_dict())  # same parameter names: checkpoints move between the two
    return fused, reference


def gradients(module: nn.Module, x: torch.Tensor, h0: torch.Tensor | None) -> list[torch.Tensor]:
    out, h_n = module(x, h0)
    loss = (out**2).sum() + (h_n * torch.arange(h_n.shape[-1])).sum()  # the outputs and the last state
    inputs = [x] + ([h0] if h0 is not None else [])
    return [out, h_n, *torch.autograd.grad(loss, [*inputs, *module.parameters()])]


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("with_h0", [True, False])
def test_fused_gru_equals_nn_gru_outputs_and_every_gradient(batch_first: bool, with_h0: bool):
    fused, reference = twins(num_layers=2, batch_first=batch_first)
    torch.manual_seed(1)
    shape = (4, 9, 3) if batch_first else (9, 4, 3)
    x = torch.randn(*shape, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(2, 4, 5, dtype=torch.double, requires_grad=True) if with_h0 else None
    names = ["output", "h_n", "x"] + (["h0"] if with_h0 else []) + [n for n, _ in fused.named_parameters()]
    for name, got, want in zip(names, gradients(fused, x, h0), gradients(reference, x, h0), strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10, msg=name)
        assert got.abs().max() > 0, f"{name} is all zeros"


def test_fused_gru_passes_gradcheck():
    fused, _ = twins(hidden=4, batch_first=True)
    x = torch.randn(3, 6, 3, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(1, 3, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, h: fused(inp, h)[0].sum() + fused(inp, h)[1].pow(2).sum(), (x, h0))


def test_eager_fallback_of_the_fused_loops_matches_torchscript(monkeypatch):
    """Where TorchScript is unavailable the same functions run eagerly; both give nn.GRU's numbers."""
    fused, reference = twins(batch_first=True)
    x = torch.randn(2, 7, 3, dtype=torch.double, requires_grad=True)
    want = gradients(reference, x, None)
    monkeypatch.setattr(gru_module, "_forward_impl", gru_module._fused_forward)
    monkeypatch.setattr(gru_module, "_backward_impl", gru_module._fused_backward)
    for got, expected in zip(gradients(fused, x, None), want, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


def test_the_fused_recurrence_runs_on_cpu(monkeypatch):
    """Every other test would pass if FusedGRU silently fell back to nn.GRU: count the fused calls."""
    calls = []
    apply = gru_module.GRUFunction.apply
    monkeypatch.setattr(gru_module.GRUFunction, "apply", lambda *args: calls.append(1) or apply(*args))
    fused, _ = twins(num_layers=2, batch_first=True)
    fused(torch.randn(2, 4, 3, dtype=torch.double))
    assert len(calls) == 2  # one per layer
    fused.fused = False
    fused(torch.randn(2, 4, 3, dtype=torch.double))
    assert len(calls) == 2


def test_unfused_cases_are_nn_gru_itself():
    """fused=False, bidirectional layers, no bias and unbatched input run nn.GRU's forward: bit-identical."""
    torch.manual_seed(0)
    x = torch.randn(4, 9, 3)
    for kwargs in ({"fused": False}, {"bidirectional": True}, {"bias": False}):
        module = FusedGRU(3, 5, batch_first=True, **kwargs)
        reference = nn.GRU(3, 5, batch_first=True, bidirectional=module.bidirectional, bias=module.bias)
        reference.load_state_dict(module.state_dict())
        assert torch.equal(module(x)[0], reference(x)[0])
    module = FusedGRU(3, 5, batch_first=True)
    reference = nn.GRU(3, 5, batch_first=True)
    reference.load_state_dict(module.state_dict())
    assert torch.equal(module(x[0])[0], reference(x[0])[0])


def test_bad_inputs_get_nn_grus_own_errors():
    module = FusedGRU(3, 5, batch_first=True)
    with pytest.raises(RuntimeError, match="Expected hidden size"):
        module(torch.randn(4, 9, 3), torch.zeros(1, 2, 5))
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        module(torch.randn(4, 9, 2))


def test_multilayer_dropout_is_active_in_training_only():
    fused, reference = twins(num_layers=3, batch_first=True, dropout=0.5)
    x = torch.randn(4, 9, 3, dtype=torch.double)
    torch.manual_seed(0)
    first, second = fused.train()(x)[0], fused(x)[0]
    assert not torch.equal(first, second)  # a fresh mask each call
    torch.testing.assert_close(fused.eval()(x)[0], reference.eval()(x)[0], atol=1e-12, rtol=1e-12)


def test_first_order_gradients_under_create_graph_match_nn_gru():
    """A gradient penalty calls backward with create_graph=True: the fused backward must still give the grads."""
    fused, reference = twins(batch_first=True)
    x = torch.randn(2, 5, 3, dtype=torch.double, requires_grad=True)
    got = torch.autograd.grad(fused(x)[0].sum(), x, create_graph=True)[0]
    want = torch.autograd.grad(reference(x)[0].sum(), x, create_graph=True)[0]
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_fused_gru_float32_matches_nn_gru_closely():
    torch.manual_seed(0)
    fused, reference = FusedGRU(1, 50, batch_first=True), nn.GRU(1, 50, batch_first=True)
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(32, 60, 1)
    torch.testing.assert_close(fused(x)[0], reference(x)[0], atol=1e-5, rtol=1e-4)


def test_under_cpu_autocast_it_is_nn_gru_in_bf16():
    torch.manual_seed(0)
    fused, reference = FusedGRU(3, 5, batch_first=True), nn.GRU(3, 5, batch_first=True)
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(2, 5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = fused(x)[0], reference(x)[0]
    assert torch.equal(got, want)


def test_gru_forecaster_uses_fused_gru_and_loads_nn_gru_weights():
    """`model=gru` layers are FusedGRU; a state dict saved with nn.GRU layers loads unchanged."""
    model = RNNForecaster(cell="gru", hidden_size=6, num_layers=2, window=8)
    assert [type(layer) for layer in model.layers] == [FusedGRU, FusedGRU]
    torch.manual_seed(3)
    old = RNNForecaster(cell="gru", hidden_size=6, num_layers=2, window=8)
    old.layers = nn.ModuleList([nn.GRU(1, 6, batch_first=True), nn.GRU(6, 6, batch_first=True)])
    model.load_state_dict(old.state_dict())
    x = torch.randn(3, 8, 1)
    torch.testing.assert_close(model.eval()(x), old.eval()(x), atol=1e-6, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_gru_on_cuda_is_cudnn_with_the_same_weights():
    fused, _ = twins(batch_first=True)
    fused.float()
    gpu = FusedGRU(3, 5, batch_first=True).cuda()
    gpu.load_state_dict(fused.state_dict())
    x = torch.randn(4, 9, 3)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # cuDNN's default TF32 differs by ~4e-4
        torch.testing.assert_close(gpu(x.cuda())[0].cpu(), fused(x)[0], atol=1e-5, rtol=1e-4)


def test_script_or_eager_falls_back_to_the_function_with_a_warning():
    from lstm_zoo.models.scripting import script_or_eager

    def unscriptable(x: dict) -> dict:
        return {**x}  # dict unpacking: not TorchScript

    with pytest.warns(UserWarning, match="TorchScript unavailable for the thing"):
        (function,) = script_or_eager(unscriptable, name="thing")
    assert function is unscriptable
    assert all(isinstance(f, torch.jit.ScriptFunction) for f in (gru_module._forward_impl, gru_module._backward_impl))
