"""The zoo: each variant's defining property, and every model's contract (shapes, learning, the whole pipeline)."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from lstm_zoo.errors import ConfigError
from lstm_zoo.models import (
    Attention,
    AttentionForecaster,
    CNNLSTMForecaster,
    EncoderDecoderForecaster,
    MinRNN,
    MinRNNForecaster,
    PeepholeForecaster,
    PeepholeLSTM,
    RNNForecaster,
    SLSTMForecaster,
)
from lstm_zoo.pipeline import run
from tests.helpers import CONF, FAST, compose_train, model_fields, trained_models
from tests.helpers import MODELS as ALL_MODELS

MODELS = trained_models()  # the models fit in closed form have tests of their own (test_baselines.py)


def model_from_config(name: str, **overrides) -> nn.Module:
    """conf/model/<name>.yaml instantiated as the pipeline does, with the overrides of the fields it has (a
    hidden_size for a recurrent model, none for dlinear)."""
    horizon, window = overrides.pop("horizon", 1), overrides.pop("window", 20)
    fields = model_fields(name)
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "model" / f"{name}.yaml"),
                          {k: v for k, v in overrides.items() if k in fields})
    return instantiate(cfg, n_features=2, horizon=horizon, window=window, _convert_="all")


def test_the_zoo_keeps_the_eleven_recurrent_models():
    """conf/model is the list of models (tests and `experiment=zoo` discover it); these eleven must stay in it."""
    assert {"attention", "bidirectional", "cnn_lstm", "encoder_decoder", "gru", "min_gru", "min_lstm", "peephole",
            "slstm", "stacked", "vanilla"} <= set(MODELS)


# --- peephole -------------------------------------------------------------------------------------------------


def peephole_twin(lstm: nn.LSTM, fused: bool = True) -> PeepholeLSTM:
    """A PeepholeLSTM with the gate weights of `lstm` and zero peephole weights."""
    twin = PeepholeLSTM(lstm.input_size, lstm.hidden_size, lstm.num_layers, batch_first=True, fused=fused)
    missing, unexpected = twin.load_state_dict(lstm.state_dict(), strict=False)
    assert unexpected == [] and missing == [f"peephole_l{k}" for k in range(lstm.num_layers)]
    with torch.no_grad():
        for k in range(lstm.num_layers):
            getattr(twin, f"peephole_l{k}").zero_()
    return twin


@pytest.mark.parametrize("fused", [True, False])
def test_peephole_with_zero_peepholes_is_nn_lstm(fused: bool):
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 6, num_layers=2, batch_first=True)
    twin = peephole_twin(lstm, fused)
    x, h0, c0 = torch.randn(4, 9, 3), torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    for hx in (None, (h0, c0)):
        out, (h, c) = twin(x, hx)
        ref_out, (ref_h, ref_c) = lstm(x, hx)
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=0)
        torch.testing.assert_close(h, ref_h, atol=1e-5, rtol=0)
        torch.testing.assert_close(c, ref_c, atol=1e-5, rtol=0)


def test_peephole_weights_change_the_output():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 6, batch_first=True)
    twin, x = peephole_twin(lstm), torch.randn(4, 9, 3)
    before = twin(x)[0]
    with torch.no_grad():
        twin.peephole_l0.normal_()
    assert (twin(x)[0] - before).abs().max() > 1e-3


def test_peephole_one_step_matches_hand_computation():
    """The Gers & Schmidhuber equations, written out in numpy gate by gate."""
    torch.manual_seed(1)
    cell = PeepholeLSTM(3, 5, batch_first=True).double()
    x, h, c = torch.randn(4, 1, 3, dtype=torch.double), torch.randn(4, 5, dtype=torch.double), torch.randn(
        4, 5, dtype=torch.double)
    out, (h1, c1) = cell(x, (h[None], c[None]))
    p = {n: v.detach().numpy() for n, v in cell.named_parameters()}
    W_i, W_f, W_g, W_o = np.split(p["weight_ih_l0"], 4)
    U_i, U_f, U_g, U_o = np.split(p["weight_hh_l0"], 4)
    b_i, b_f, b_g, b_o = np.split(p["bias_ih_l0"] + p["bias_hh_l0"], 4)
    p_i, p_f, p_o = p["peephole_l0"]
    xt, hp, cp = x[:, 0].numpy(), h.numpy(), c.numpy()

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    i = sigmoid(xt @ W_i.T + hp @ U_i.T + b_i + p_i * cp)
    f = sigmoid(xt @ W_f.T + hp @ U_f.T + b_f + p_f * cp)
    c_new = f * cp + i * np.tanh(xt @ W_g.T + hp @ U_g.T + b_g)
    o = sigmoid(xt @ W_o.T + hp @ U_o.T + b_o + p_o * c_new)
    h_new = o * np.tanh(c_new)
    np.testing.assert_allclose(c1[0].detach().numpy(), c_new, atol=1e-12)
    np.testing.assert_allclose(h1[0].detach().numpy(), h_new, atol=1e-12)
    np.testing.assert_allclose(out[:, 0].detach().numpy(), h_new, atol=1e-12)


def test_peephole_fused_backward_equals_autograd_and_reaches_peepholes():
    """The hand-written backward gives autograd's gradients for every input and parameter, peepholes included."""
    torch.manual_seed(2)
    fused = PeepholeLSTM(3, 5, num_layers=2, batch_first=True).double()
    reference = PeepholeLSTM(3, 5, num_layers=2, batch_first=True, fused=False).double()
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(4, 7, 3, dtype=torch.double, requires_grad=True)
    h0, c0 = (torch.randn(2, 4, 5, dtype=torch.double, requires_grad=True) for _ in range(2))

    def grads(module: PeepholeLSTM) -> list[torch.Tensor]:
        out, (h, c) = module(x, (h0, c0))
        loss = (out**2).sum() + (h * torch.arange(5)).sum() + (c**3).sum()  # every output gets a gradient
        return torch.autograd.grad(loss, [x, h0, c0, *module.parameters()])

    names = ["x", "h0", "c0"] + [n for n, _ in fused.named_parameters()]
    for name, got, want in zip(names, grads(fused), grads(reference), strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10, msg=name)
        if name.startswith("peephole"):
            assert got.abs().min() > 0, f"{name} gets no gradient"
    assert torch.autograd.gradcheck(lambda inp: fused(inp)[0].sum(), (x,))


def test_peephole_forecaster_mirrors_rnn_forecaster():
    """Same layer structure as the stacked LSTM: one module per layer, Dropout after each, only 3H more per layer."""
    peephole, stacked = PeepholeForecaster(hidden_size=8, num_layers=3), RNNForecaster(hidden_size=8, num_layers=3)
    assert [type(m) for m in peephole.layers] == [PeepholeLSTM] * 3
    assert peephole.num_parameters - stacked.num_parameters == 3 * 3 * 8


def test_peephole_forecaster_reloads_from_its_checkpoint_hyper_parameters(tmp_path):
    """Lightning rebuilds the model as cls(**hparams), hparams gathered over the whole __init__ chain."""
    torch.manual_seed(0)
    model = PeepholeForecaster(hidden_size=8, num_layers=2, dropout=0.1, fused=False, window=12).eval()
    path = tmp_path / "peephole.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "pytorch-lightning_version": L.__version__}, path)
    loaded = PeepholeForecaster.load_from_checkpoint(path, weights_only=True).eval()
    assert loaded.hparams.cell == "peephole" and loaded.hparams.fused is False and loaded.hparams.init == "keras"
    x = torch.randn(3, 12, 1)
    assert torch.equal(loaded(x), model(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_peephole_runs_on_cuda_like_on_cpu():
    torch.manual_seed(0)
    cpu = PeepholeLSTM(3, 6, num_layers=2, batch_first=True)
    gpu = PeepholeLSTM(3, 6, num_layers=2, batch_first=True).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(4, 9, 3)
    out_cpu, out_gpu = cpu(x)[0], gpu(x.cuda())[0]
    out_cpu.sum().backward()
    out_gpu.sum().backward()
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gpu.peephole_l0.grad.cpu(), cpu.peephole_l0.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["min_gru", "min_lstm", "slstm"])
def test_new_cells_run_on_cuda_like_on_cpu(name: str):
    """Every mode is pure torch ops, so the same code runs on a GPU: outputs and gradients as on the CPU."""
    for mode in ("sequential", "reference") + (("parallel",) if name != "slstm" else ()):
        torch.manual_seed(0)
        cpu = model_from_config(name, hidden_size=8, dropout=0.0, mode=mode)
        gpu = model_from_config(name, hidden_size=8, dropout=0.0, mode=mode).cuda()
        gpu.load_state_dict(cpu.state_dict())
        x = torch.randn(4, 20, 2)
        out_cpu, out_gpu = cpu(x), gpu(x.cuda())
        out_cpu.sum().backward()
        out_gpu.sum().backward()
        torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-5, rtol=1e-4)
        for (name_, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
            torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, atol=1e-5, rtol=1e-4, msg=f"{mode} {name_}")


# --- bidirectional --------------------------------------------------------------------------------------------


def test_bidirectional_head_sees_the_backward_final_state():
    """Changing only the first day changes the backward direction's final state (which read that day last)."""
    torch.manual_seed(0)
    model = model_from_config("bidirectional", num_layers=1, hidden_size=6, dropout=0.0).eval()
    seen = {}
    model.head.register_forward_hook(lambda module, inputs, output: seen.update(head_input=inputs[0]))
    x = torch.randn(2, 20, 2)
    model(x)
    before = seen["head_input"].clone()
    states_before = model.layers[0](x)[0]
    x[:, 0] += 1.0
    model(x)
    after = seen["head_input"]
    assert (after[:, 6:] - before[:, 6:]).abs().min() > 0  # the backward half
    # the backward state at the last step has read only that step: a head on it would miss day one
    torch.testing.assert_close(model.layers[0](x)[0][:, -1, 6:], states_before[:, -1, 6:])


def test_bidirectional_doubles_the_recurrent_parameters():
    model = model_from_config("bidirectional", num_layers=1, hidden_size=6)
    one_way = nn.LSTM(2, 6)
    recurrent = sum(p.numel() for p in model.layers.parameters())
    assert recurrent == 2 * sum(p.numel() for p in one_way.parameters()) == 2 * 4 * (6 * (2 + 6) + 2 * 6)
    frozen_biases = 2 * 4 * 6  # Keras init: one bias per gate, nn.LSTM's bias_hh is frozen in both directions
    assert model.num_parameters == recurrent - frozen_biases + (2 * 6 + 1) * 1


# --- encoder-decoder ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("horizon", [1, 3, 7])
def test_encoder_decoder_decodes_horizon_steps(horizon: int):
    model = model_from_config("encoder_decoder", hidden_size=8, horizon=horizon)
    seen = []
    model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    assert model(torch.randn(5, 20, 2)).shape == (5, horizon)
    assert seen == [(5, 1, 1)] * horizon  # one decoder call per step ahead, one value in


def test_teacher_forcing_ratio_decides_what_the_decoder_reads():
    torch.manual_seed(0)
    x, y = torch.randn(4, 20, 2), torch.randn(4, 5)
    for ratio in (0.0, 1.0):
        model = model_from_config("encoder_decoder", hidden_size=8, dropout=0.0, horizon=5, teacher_forcing=ratio)
        seen = []
        model.decoder.register_forward_hook(lambda module, inputs, output, seen=seen: seen.append(inputs[0]))
        model.training_forward(x, y)
        fed = torch.cat(seen[1:], 1).squeeze(-1)  # what steps 2..5 read
        if ratio == 1.0:
            torch.testing.assert_close(fed, y[:, :-1])
        else:
            torch.testing.assert_close(fed, model(x)[:, :-1])  # its own forecasts


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_encoder_decoder_trains_with_teacher_forcing_ratio(fast_cfg, ratio: float):
    metrics = run(fast_cfg("model=encoder_decoder", f"model.teacher_forcing={ratio}", "data.horizon=3",
                           "trainer.max_epochs=2"))
    assert metrics["status"] == "completed"
    assert math.isfinite(metrics["test/rmse"]) and math.isfinite(metrics["val/loss"])


# --- attention ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("score", ["dot", "additive"])
def test_attention_weights_are_a_distribution_over_the_window(score: str):
    model = model_from_config("attention", hidden_size=8, score=score)
    out, weights = model(torch.randn(5, 20, 2), return_weights=True)
    assert out.shape == (5, 1) and weights.shape == (5, 20)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(5))


@pytest.mark.parametrize("score", ["dot", "additive"])
def test_attention_moves_to_a_salient_step(score: str):
    torch.manual_seed(0)
    attention = Attention(4, score)
    if score == "additive":  # score(h) = sum(tanh(h)): large positive states are salient
        with torch.no_grad():
            attention.keys.weight.copy_(torch.eye(4))
            attention.keys.bias.zero_()
            attention.query.weight.zero_()
            attention.v.weight.fill_(1.0)
    states, query = torch.randn(3, 10, 4) * 0.1, 2 * nn.functional.normalize(torch.randn(3, 4), dim=-1)
    before = attention(states, query)[1]
    states[:, 6] = 5 * (query if score == "dot" else torch.ones(3, 4))
    after = attention(states, query)[1]
    assert (after.argmax(-1) == 6).all()
    assert (after[:, 6] > before[:, 6] + 0.5).all()


def test_attention_mask():
    torch.manual_seed(0)
    model = model_from_config("attention", hidden_size=8, horizon=3).eval()
    x = torch.randn(4, 20, 2)
    out, weights = model(x, return_weights=True)
    out_all, weights_all = model(x, mask=torch.ones(4, 20, dtype=torch.bool), return_weights=True)
    torch.testing.assert_close(out_all, out)
    torch.testing.assert_close(weights_all, weights)
    mask = torch.ones(4, 20, dtype=torch.bool)
    mask[:, :5] = False
    _, weights_masked = model(x, mask=mask, return_weights=True)
    assert weights_masked.shape == (4, 20) and (weights_masked[:, :5] == 0).all()
    torch.testing.assert_close(weights_masked.sum(-1), torch.ones(4))


# --- CNN-LSTM -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_size, conv_layers, pool_size", [(3, 2, 2), (5, 1, 1), (2, 3, 3), (3, 1, 4)])
def test_cnn_lstm_sequence_length_follows_conv_arithmetic(kernel_size: int, conv_layers: int, pool_size: int):
    model = CNNLSTMForecaster(channels=4, kernel_size=kernel_size, conv_layers=conv_layers, pool_size=pool_size,
                              hidden_size=8, window=40, n_features=2)
    seen = []
    model.lstm.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    model(torch.randn(3, 40, 2))
    length = 40
    for _ in range(conv_layers):  # valid convolution, then floor division by the pooling size
        length = (length - kernel_size + 1) // pool_size
    assert seen == [(3, length, 4)]


def test_cnn_lstm_rejects_a_window_too_short_for_its_convolutions():
    with pytest.raises(ConfigError, match="data.window=8 is too short"):
        CNNLSTMForecaster(kernel_size=3, conv_layers=3, pool_size=2, window=8)


# --- every model ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("horizon", [1, 5])
def test_every_model_maps_windows_to_horizon(name: str, horizon: int):
    model = model_from_config(name, hidden_size=8, horizon=horizon)
    assert model(torch.randn(3, 20, 2)).shape == (3, horizon)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_overfits_one_small_batch(name: str):
    torch.manual_seed(0)
    model = model_from_config(name, hidden_size=16, dropout=0.0, horizon=3, window=12)
    x = torch.randn(8, 12, 2)
    y = torch.stack([x[:, -1, 0], x[:, :, 1].mean(1), x[:, 0, 0]], 1)  # (8, 3) targets the window determines
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        first = nn.functional.mse_loss(model.eval()(x), y).item()
    model.train()
    for _ in range(100):
        loss = nn.functional.mse_loss(model.training_forward(x, y), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last = nn.functional.mse_loss(model.eval()(x), y).item()
    assert last < first / 10, f"{name}: loss {first:.4f} -> {last:.4f}"


def recurrent_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if "weight_hh_l0" in dict(m.named_parameters(recurse=False))]


@pytest.mark.parametrize("name", [m for m in MODELS if "init" in model_fields(m)])
def test_every_model_follows_one_init_scheme(name: str):
    """init=keras everywhere: Glorot Linear/Conv weights with zero biases, orthogonal recurrent weights, zero
    biases (LSTM forget gate 1) and one trainable bias per LSTM gate; init=torch: torch's defaults, all trainable."""
    torch.manual_seed(0)
    keras, default = model_from_config(name, hidden_size=8, init="keras"), model_from_config(name, hidden_size=8,
                                                                                            init="torch")
    dense = [m for m in keras.modules() if isinstance(m, nn.Linear | nn.Conv1d)]
    assert dense and all(m.bias is None or not m.bias.any() for m in dense)
    for m in dense:
        fan_out, fan_in = m.weight.shape[0] * m.weight[0, 0].numel(), m.weight[0].numel()
        assert m.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out))  # Glorot-uniform's bound
    frozen = 0
    for layer in recurrent_modules(keras):
        params = dict(layer.named_parameters(recurse=False))
        hidden = layer.hidden_size
        lstm_like = params["weight_ih_l0"].shape[0] == 4 * hidden
        for pname, p in params.items():
            if pname.startswith("weight_hh"):  # orthonormal columns, per head for sLSTM's (heads, rows, cols)
                for block in p.view(-1, *p.shape[-2:]):
                    torch.testing.assert_close(block.T @ block, torch.eye(block.shape[1]), atol=1e-5, rtol=0)
            if pname.startswith("bias_hh"):
                assert not p.any() and p.requires_grad == (not lstm_like)
                frozen += p.numel() * lstm_like
            if pname.startswith("bias_ih"):
                assert (p[hidden : 2 * hidden] == 1).all() if lstm_like else not p.any()
    assert recurrent_modules(keras) or any(isinstance(m, MinRNN) for m in keras.modules())  # min cells: Linear only
    assert all(p.requires_grad for p in default.parameters())
    assert any(m.bias.any() for m in default.modules() if isinstance(m, nn.Linear) and m.bias is not None)
    assert keras.num_parameters == default.num_parameters - frozen
    with pytest.raises(Exception, match=r"model.init='xavier' is not one of \['keras', 'torch'\]"):  # via Hydra
        model_from_config(name, init="xavier")


def tensorboard_tags(run_dir) -> dict[str, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "histograms": 0})
    return events.Reload().Tags()


@pytest.mark.parametrize("name", MODELS)
def test_every_model_trains_and_tests_through_the_pipeline(trained_run, name: str):
    run_dir, metrics = trained_run(name)  # horizon 2 (conftest.SHARED_RUN); horizon 1 below and in most other runs
    assert metrics["status"] == "completed"
    assert math.isfinite(metrics["test/rmse"]) and math.isfinite(metrics["test/persistence_rmse"])
    assert "test/rmse_step2" in metrics and "test/rmse_step3" not in metrics
    frame = pd.read_csv(run_dir / "predictions.csv")
    assert "predicted_t+2" in frame and "predicted_t+3" not in frame and frame.notna().all().all()
    tags = tensorboard_tags(run_dir)
    assert "model/num_parameters" in tags["scalars"]
    assert ("test/attention" in tags["images"]) == (name == "attention")
    assert any(t.startswith("peephole/") for t in tags["histograms"]) == (name == "peephole")


def test_a_one_step_run_has_no_multi_step_columns(fast_cfg, tmp_path):
    metrics = run(fast_cfg("model=vanilla"))
    assert metrics["status"] == "completed" and math.isfinite(metrics["test/rmse"])
    assert not any(k.startswith("test/rmse_step") for k in metrics)
    assert not any(c.startswith("predicted_t+") for c in pd.read_csv(tmp_path / "run" / "predictions.csv"))


@pytest.mark.parametrize("name", ["min_lstm", "slstm"])  # min_gru shares min_lstm's function
def test_new_cells_resume_from_a_checkpoint_to_identical_results(prices_csv, tmp_path, name: str):
    """Two epochs in one go equal one epoch, then a resumed second one (their custom autograd functions included)."""
    def train(folder: str, *extra: str) -> dict:
        return run(compose_train(["data=csv", f"data.path={prices_csv}", *FAST, f"model={name}", *extra],
                                 tmp_path / folder))

    straight = train("straight", "trainer.max_epochs=2")
    train("first", "trainer.max_epochs=1")
    resumed = train("resumed", "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}")
    assert resumed["status"] == "completed" and resumed["epochs"] == 2
    test_metrics = {k: v for k, v in straight.items() if k.startswith("test/")}
    assert test_metrics and {k: resumed[k] for k in test_metrics} == test_metrics  # bit-identical


def test_every_model_class_is_used_by_a_config():
    """Each Forecaster subclass defined in lstm_zoo/models is the target of a conf/model file (no dead model code, no
    class without its YAML), the recurrent ones included."""
    import importlib
    import pkgutil

    from hydra.utils import get_class

    import lstm_zoo.models
    from lstm_zoo.models import Forecaster

    defined = set()
    for info in pkgutil.iter_modules(lstm_zoo.models.__path__):
        module = importlib.import_module(f"lstm_zoo.models.{info.name}")
        defined |= {c for c in vars(module).values() if isinstance(c, type) and issubclass(c, Forecaster)
                    and c is not Forecaster and c.__module__ == module.__name__}
    used = {get_class(OmegaConf.load(CONF / "model" / f"{name}.yaml")._target_) for name in ALL_MODELS}
    bases = {base for cls in used for base in cls.__mro__[1:]}  # FittedForecaster, ...: shared by concrete models
    assert defined - bases <= used <= defined
    assert {RNNForecaster, PeepholeForecaster, CNNLSTMForecaster, EncoderDecoderForecaster, AttentionForecaster,
            MinRNNForecaster, SLSTMForecaster} <= used
