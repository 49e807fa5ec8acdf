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


def test_unfused_cases_are_nn_gru_itself():
    """fused=False, bidirectional layers and unbatched input run nn.GRU's forward: bit-identical."""
    torch.manual_seed(0)
    x = torch.randn(4, 9, 3)
    for kwargs in ({"fused": False}, {"bidirectional": True}):
        module = FusedGRU(3, 5, batch_first=True, **kwargs)
        reference = nn.GRU(3, 5, batch_first=True, bidirectional=module.bidirectional)
        reference.load_state_dict(module.state_dict())
        assert torch.equal(module(x)[0], reference(x)[0])
    module = FusedGRU(3, 5, batch_first=True)
    reference = nn.GRU(3, 5, batch_first=True)
    reference.load_state_dict(module.state_dict())
    assert torch.equal(module(x[0])[0], reference(x[0])[0])


def test_fused_gru_float32_matches_nn_gru_closely():
    torch.manual_seed(0)
    fused, reference = FusedGRU(1, 50, batch_first=True), nn.GRU(1, 50, batch_first=True)
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(32, 60, 1)
    torch.testing.assert_close(fused(x)[0], reference(x)[0], atol=1e-5, rtol=1e-4)


def test_fused_gru_under_cpu_autocast_runs_in_float32():
    fused, _ = twins(batch_first=True)
    fused.float()
    x = torch.randn(2, 5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = fused(x)
    assert out.dtype == h_n.dtype == torch.float32
    torch.testing.assert_close(out, fused(x)[0])


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
    torch.testing.assert_close(gpu(x.cuda())[0].cpu(), fused(x)[0], atol=1e-5, rtol=1e-4)
