"""Peephole LSTM (Gers & Schmidhuber, 2000): gates that also see the cell state, and its forecaster."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from lstm_zoo.models.base import Forecaster


def peephole_loop(xw: Tensor, w_hh: Tensor, peep: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One layer's recurrence with plain autograd, gate order i, f, g, o as in nn.LSTM.

    xw (T, B, 4H) is the input projection of all steps (biases included), computed before the loop;
    peep (3, H) holds the diagonal peephole weights of the input, forget and output gates.
    Returns the hidden states (T, B, H) and the last cell state (B, H).
    """
    outputs = []
    for t in range(xw.shape[0]):
        i, f, g, o = torch.addmm(xw[t], h, w_hh.t()).chunk(4, 1)
        i = torch.sigmoid(i + peep[0] * c)  # input and forget gates peek at c(t-1)
        f = torch.sigmoid(f + peep[1] * c)
        c = f * c + i * torch.tanh(g)
        o = torch.sigmoid(o + peep[2] * c)  # the output gate peeks at the new c(t)
        h = o * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs), c


def _fused_forward(xw: Tensor, w_hh: Tensor, peep: Tensor, h: Tensor,
                   c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Forward without an autograd graph, written in place into preallocated buffers (few ops per step).

    Returns the hidden states (T, B, H), gate activations (T, B, 4H), cell states (T+1, B, H) with c0
    first, and tanh of the cell states (T, B, H): what the backward needs.
    """
    n_steps, hidden = xw.shape[0], h.shape[1]
    w_t, peep_if, peep_o = w_hh.t(), peep[:2].reshape(1, 2 * hidden), peep[2]
    acts, outputs = torch.empty_like(xw), xw.new_empty(n_steps, h.shape[0], hidden)
    cells, tanh_cells = xw.new_empty(n_steps + 1, h.shape[0], hidden), torch.empty_like(outputs)
    cells[0] = c
    for t in range(n_steps):
        gates = acts[t]
        torch.addmm(xw[t], h, w_t, out=gates)
        gates[:, : 2 * hidden].addcmul_(c.repeat(1, 2), peep_if).sigmoid_()  # i, f see c(t-1)
        gates[:, 2 * hidden : 3 * hidden].tanh_()
        c = torch.addcmul(gates[:, hidden : 2 * hidden] * c, gates[:, :hidden], gates[:, 2 * hidden : 3 * hidden],
                          out=cells[t + 1])
        o = gates[:, 3 * hidden :].addcmul_(c, peep_o).sigmoid_()  # o sees c(t)
        h = torch.mul(o, torch.tanh(c, out=tanh_cells[t]), out=outputs[t])
    return outputs, acts, cells, tanh_cells


def _fused_backward(d_out: Tensor, d_c: Tensor, w_hh: Tensor, peep: Tensor, acts: Tensor, cells: Tensor,
                    tanh_cells: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hand-written BPTT of `peephole_loop`: the gate pre-activation grads (T, B, 4H), dh0 and dc0.

    Every factor that depends only on forward values is computed for all steps at once before the loop,
    so each step is a handful of (B, H) ops and one matrix product.
    """
    hidden = w_hh.shape[1]
    i, f, g, o = acts.chunk(4, 2)
    d_o_factor = tanh_cells * o * (1 - o)  # d(pre-activation of o) / dh
    d_c_factor = o * (1 - tanh_cells * tanh_cells)  # dc / dh through h = o * tanh(c)
    ifg_factor = torch.cat([g * i * (1 - i), cells[:-1] * f * (1 - f), i * (1 - g * g)], 2)  # (T, B, 3H)
    peep_i, peep_f, peep_o = peep[0], peep[1], peep[2]
    d_gates = torch.empty_like(acts)
    n_steps = d_out.shape[0]
    d_h = d_out[n_steps - 1]  # dL/dh(t): from the output at t, plus from step t+1's gates below
    for t in range(n_steps - 1, -1, -1):
        step = d_gates[t]
        d_o = torch.mul(d_h, d_o_factor[t], out=step[:, 3 * hidden :])
        d_c = torch.addcmul(d_c, d_h, d_c_factor[t]).addcmul_(d_o, peep_o)
        torch.mul(d_c.repeat(1, 3), ifg_factor[t], out=step[:, : 3 * hidden])  # d_i, d_f, d_g
        d_c = (d_c * f[t]).addcmul_(step[:, :hidden], peep_i).addcmul_(step[:, hidden : 2 * hidden], peep_f)
        d_h = torch.addmm(d_out[t - 1], step, w_hh) if t > 0 else step.mm(w_hh)
    return d_gates, d_h, d_c


_forward_impl, _backward_impl = _fused_forward, _fused_backward
try:  # TorchScript runs the per-step loop without Python overhead; torch >= 2.10 flags it deprecated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _forward_impl, _backward_impl = torch.jit.script(_fused_forward), torch.jit.script(_fused_backward)
except Exception as err:  # noqa: BLE001 - any scripting failure: the same code runs eagerly, just slower
    warnings.warn(f"TorchScript unavailable for the peephole LSTM ({type(err).__name__}); using eager loops.",
                  stacklevel=1)


class PeepholeFunction(torch.autograd.Function):
    """One peephole LSTM layer with a hand-written backward: no per-step autograd graph."""

    @staticmethod
    def forward(ctx, xw: Tensor, w_hh: Tensor, peep: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor]:
        outputs, acts, cells, tanh_cells = _forward_impl(xw, w_hh, peep, h0, c0)
        ctx.save_for_backward(w_hh, peep, h0, outputs, acts, cells, tanh_cells)
        return outputs, cells[-1]

    @staticmethod
    def backward(ctx, d_out: Tensor, d_cn: Tensor):
        w_hh, peep, h0, outputs, acts, cells, tanh_cells = ctx.saved_tensors
        d_gates, d_h0, d_c0 = _backward_impl(d_out.contiguous(), d_cn.contiguous(), w_hh, peep, acts, cells,
                                             tanh_cells)
        hidden = w_hh.shape[1]
        h_prev = torch.cat([h0.unsqueeze(0), outputs[:-1]])  # (T, B, H): the h each step's gates saw
        d_w_hh = d_gates.flatten(0, 1).t().mm(h_prev.flatten(0, 1))  # all steps in one matmul
        c_prev, c_new = cells[:-1], cells[1:]
        d_peep = torch.stack([(d_gates[..., :hidden] * c_prev).sum((0, 1)),
                              (d_gates[..., hidden : 2 * hidden] * c_prev).sum((0, 1)),
                              (d_gates[..., 3 * hidden :] * c_new).sum((0, 1))])
        return d_gates, d_w_hh, d_peep, d_h0, d_c0


class PeepholeLSTM(nn.Module):
    """Drop-in for `nn.LSTM` (gate order i, f, g, o; same parameter names) with diagonal peephole weights.

    Forward: `(input, (h0, c0) or None) -> (output, (h_n, c_n))`. The input projection of all time steps
    is one matrix product before the recurrence; the recurrence is a custom autograd function with a
    hand-written backward (`fused=True`) or plain autograd (`fused=False`, the reference; both are exact).
    Pure torch ops, so it runs on any device.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, fused: bool = True) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.fused = bias, batch_first, dropout, fused
        for layer in range(num_layers):
            fan_in = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, fan_in)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
            if bias:
                self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(4 * hidden_size)))
                self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(4 * hidden_size)))
            # rows: input gate sees c(t-1), forget gate sees c(t-1), output gate sees c(t)
            self.register_parameter(f"peephole_l{layer}", nn.Parameter(torch.empty(3, hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)  # nn.LSTM's init, peepholes included
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: Tensor, hx: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x = x.transpose(0, 1) if self.batch_first else x  # (T, B, F): time-major for the recurrence
        if hx is None:
            zeros = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)
            hx = (zeros, zeros)
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = nn.functional.dropout(x, self.dropout, training=True)
            w_ih, w_hh = getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")
            peep = getattr(self, f"peephole_l{layer}")
            if self.bias:
                xw = torch.addmm(getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}"),
                                 x.flatten(0, 1), w_ih.t())
            else:
                xw = x.flatten(0, 1).mm(w_ih.t())
            xw = xw.view(x.shape[0], x.shape[1], -1)  # (T, B, 4H), all steps in one matrix product
            if self.fused:  # in the weights' precision, also under autocast (mixed-precision training)
                with torch.autocast(x.device.type, enabled=False):
                    dtype = w_hh.dtype
                    x, c = PeepholeFunction.apply(xw.to(dtype), w_hh, peep, hx[0][layer].to(dtype),
                                                  hx[1][layer].to(dtype))
            else:
                x, c = peephole_loop(xw, w_hh, peep, hx[0][layer], hx[1][layer])
            h_n.append(x[-1])
            c_n.append(c)
        output = x.transpose(0, 1) if self.batch_first else x
        return output, (torch.stack(h_n), torch.stack(c_n))


class PeepholeForecaster(Forecaster):
    """Keras-style stack of peephole LSTM layers, each followed by Dropout, then a linear head on the last step."""

    def __init__(self, hidden_size: int = 50, num_layers: int = 4, dropout: float = 0.2, fused: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout={dropout} is out of range: it must be in [0, 1).")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"model.hidden_size={hidden_size} and model.num_layers={num_layers} must be >= 1.")
        sizes = [self.hparams.n_features] + [hidden_size] * num_layers
        self.layers = nn.ModuleList(
            PeepholeLSTM(sizes[i], hidden_size, batch_first=True, fused=fused) for i in range(num_layers)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, self.hparams.horizon)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:  # (B, W, F) -> (B, W, hidden)
            x = self.dropout(layer(x)[0])
        return self.head(x[:, -1])  # (B, horizon), from the last time step
