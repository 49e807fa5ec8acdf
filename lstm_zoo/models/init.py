"""One weight-initialization scheme for every model of the zoo: `model.init=keras` (default) or `model.init=torch`.

`keras` builds each layer as the tutorial's Keras model would:
- recurrent layers (every module with `weight_ih_l*` / `weight_hh_l*` parameters: nn.LSTM, nn.GRU, FusedGRU,
  PeepholeLSTM, SLSTM): Glorot-uniform input kernels, orthogonal recurrent kernels (per head for SLSTM's
  block-diagonal kernel, shaped (heads, 4 * head size, head size)), zero biases; for the 4-gate
  (LSTM-type) layers a forget-gate bias of 1 (`unit_forget_bias`) and ONE bias per gate: torch's second bias
  vector `bias_hh*` has the same gradient as `bias_ih*`, so under RMSprop the pair would move twice as far per
  step as Keras' single bias; it is zeroed and frozen (`requires_grad=False`), leaving Keras' parameter count.
  GRU layers keep both biases: Keras' GRU (`reset_after=True`) has an input and a recurrent bias too.
- `nn.Linear` and `nn.Conv1d` (heads, attention scores, convolutions, the input projections of MinGRU and
  MinLSTM): Glorot-uniform weights, zero biases.
- parameters of other shapes (peephole weights) keep their module's own initialization.
`torch` leaves torch's defaults (uniform in +-1/sqrt(fan), two trainable LSTM biases) untouched.
"""

from __future__ import annotations

from torch import nn

from lstm_zoo.errors import ConfigError

INIT_SCHEMES = ("keras", "torch")


def check_init(scheme: str) -> None:
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"model.init={scheme!r} is not one of {list(INIT_SCHEMES)}.")


def _init_recurrent(layer: nn.Module) -> None:
    """Keras' recurrent defaults on one multi-layer recurrent module (parameter names as in nn.LSTM)."""
    weights = dict(layer.named_parameters(recurse=False))
    gates = weights["weight_ih_l0"].shape[0] // layer.hidden_size  # 4: LSTM-type (sLSTM too), 3: GRU
    for name, param in weights.items():
        if name.startswith("weight_ih"):  # (gates * H, inputs), Keras' (inputs, gates * H) kernel transposed
            nn.init.xavier_uniform_(param)
        elif name.startswith("weight_hh"):  # each block of a block-diagonal (heads, rows, columns) kernel
            for block in param.data.view(-1, *param.shape[-2:]):
                nn.init.orthogonal_(block)
        elif name.startswith("bias"):
            nn.init.zeros_(param)
            if gates == 4 and name.startswith("bias_ih"):
                hidden = param.shape[0] // 4
                param.data[hidden : 2 * hidden] = 1.0  # torch gate order i, f, g, o
            if gates == 4 and name.startswith("bias_hh"):
                param.requires_grad_(False)  # one bias per gate, as Keras


def init_weights(model: nn.Module, scheme: str) -> None:
    """Initialize every layer of `model` by `scheme` (see the module docstring); call it once layers exist."""
    check_init(scheme)
    if scheme == "torch":
        return
    for module in model.modules():
        names = {name for name, _ in module.named_parameters(recurse=False)}
        if {"weight_ih_l0", "weight_hh_l0"} <= names:
            _init_recurrent(module)
        elif isinstance(module, nn.Linear | nn.Conv1d):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
