"""Peephole LSTM (Gers & Schmidhuber, 2000): gates that also see the cell state, and its forecaster."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch._higher_order_ops.scan import scan
from torch.autograd.function import once_differentiable

from lstm_zoo.errors import ConfigError
from lstm_zoo.models.rnn import RNNForecaster
from lstm_zoo.models.scripting import exporting, script_or_eager


def peephole_step(xw_t: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, peep: Tensor) -> tuple[Tensor, Tensor]:
    """One step of the recurrence, gate order i, f, g, o as in nn.LSTM: xw_t (B, 4H), h and c (B, H)."""
    i, f, g, o = torch.addmm(xw_t, h, w_hh.t()).chunk(4, 1)
    i = torch.sigmoid(i + peep[0] * c)  # input and forget gates peek at c(t-1)
    f = torch.sigmoid(f + peep[1] * c)
    c = f * c + i * torch.tanh(g)
    o = torch.sigmoid(o + peep[2] * c)  # the output gate peeks at the new c(t)
    return o * torch.tanh(c), c


def peephole_loop(xw: Tensor, w_hh: Tensor, peep: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One layer's recurrence with plain autograd.

    xw (T, B, 4H) is the input projection of all steps (biases included), computed before the loop;
    peep (3, H) holds the diagonal peephole weights of the input, forget and output gates.
    Returns the hidden states (T, B, H) and the last cell state (B, H).
    """
    outputs = []
    for t in range(xw.shape[0]):
        h, c = peephole_step(xw[t], h, c, w_hh, peep)
        outputs.append(h)
    return torch.stack(outputs), c


def peephole_scan(xw: Tensor, w_hh: Tensor, peep: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """`peephole_loop` as one `scan` operator, for torch.export (ONNX): a loop in the graph instead of T unrolled
    steps, which took the exporter minutes at window 60 (seconds with scan)."""
    def step(carry: tuple[Tensor, Tensor], xw_t: Tensor) -> tuple[tuple[Tensor, Tensor], Tensor]:
        h, c = peephole_step(xw_t, *carry, w_hh, peep)
        return (h, c), h.clone()  # a scan output may not alias its carry

    (_, c), outputs = scan(step, (h.clone(), c.clone()), xw.contiguous())  # inputs must not alias each other
    return outputs, c


def _fused_forward(xw: Tensor, w_hh: Tensor, peep: Tensor, h: Tensor,
                   c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Forward without an autograd graph, in place into preallocated buffers, in feature-major layout.

    xw (T, 4H, B) holds the input projection of every step with the units first, so each gate of a step is
    one contiguous (H, B) block and the recurrent product is `w_hh @ h` (4H, H) x (H, B); h and c are (H, B).
    Returns the hidden states (T+1, H, B) and cell states (T+1, H, B), both with the initial state first, the
    gate activations (T, 4, H, B) and tanh of the cell states (T, H, B): what the backward needs.
    """
    n_steps, hidden, batch = xw.shape[0], w_hh.shape[1], xw.shape[2]
    peep_if, peep_o = peep[:2].unsqueeze(2), peep[2].unsqueeze(1)  # (2, H, 1) and (H, 1): broadcast over B
    acts = xw.new_empty(n_steps, 4, hidden, batch)
    outputs, cells = xw.new_empty(n_steps + 1, hidden, batch), xw.new_empty(n_steps + 1, hidden, batch)
    tanh_cells = xw.new_empty(n_steps, hidden, batch)
    outputs[0], cells[0] = h, c
    xw_steps, act_steps, out_steps = xw.unbind(0), acts.unbind(0), outputs.unbind(0)
    cell_steps, tanh_steps = cells.unbind(0), tanh_cells.unbind(0)
    for t in range(n_steps):
        gates, c = act_steps[t], cell_steps[t]
        torch.addmm(xw_steps[t], w_hh, out_steps[t], out=gates.view(4 * hidden, batch))
        gates[:2].addcmul_(c.unsqueeze(0), peep_if).sigmoid_()  # i, f see c(t-1)
        i, f, g, o = gates.unbind(0)
        c = torch.addcmul(f * c, i, g.tanh_(), out=cell_steps[t + 1])
        o.addcmul_(c, peep_o).sigmoid_()  # o sees c(t)
        torch.mul(o, torch.tanh(c, out=tanh_steps[t]), out=out_steps[t + 1])
    return outputs, acts, cells, tanh_cells


def _fused_backward(d_out: Tensor, d_c: Tensor, w_hh: Tensor, peep: Tensor, acts: Tensor, cells: Tensor,
                    tanh_cells: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hand-written BPTT of `peephole_loop` in `_fused_forward`'s layout: d_out (T, H, B), d_c (H, B).

    Returns the gate pre-activation grads (T, 4, H, B), dh0 and dc0 (H, B). Every factor that depends only on
    forward values is computed for all steps at once before the loop, so each step is a handful of
    contiguous (H, B) ops and one matrix product.
    """
    n_steps, hidden, batch = acts.shape[0], acts.shape[2], acts.shape[3]
    i, f, g, o = acts.unbind(1)
    d_o_factor = tanh_cells * o * (1 - o)  # d(pre-activation of o) / dh
    d_c_factor = o * (1 - tanh_cells * tanh_cells)  # dc / dh through h = o * tanh(c)
    ifg_factor = torch.stack([g * i * (1 - i), cells[:-1] * f * (1 - f), i * (1 - g * g)], 1)  # (T, 3, H, B)
    peep_i, peep_f, peep_o = peep[0].unsqueeze(1), peep[1].unsqueeze(1), peep[2].unsqueeze(1)
    w_hh_t = w_hh.t()
    d_gates = torch.empty_like(acts)
    d_out_steps, d_gate_steps, f_steps = d_out.unbind(0), d_gates.unbind(0), f.unbind(0)
    d_o_steps, d_c_steps, ifg_steps = d_o_factor.unbind(0), d_c_factor.unbind(0), ifg_factor.unbind(0)
    d_h = d_out_steps[n_steps - 1]  # dL/dh(t): from the output at t, plus from step t+1's gates below
    for t in range(n_steps - 1, -1, -1):
        step = d_gate_steps[t]
        d_i, d_f, _, d_o = step.unbind(0)
        torch.mul(d_h, d_o_steps[t], out=d_o)
        d_c = torch.addcmul(d_c, d_h, d_c_steps[t]).addcmul_(d_o, peep_o)
        torch.mul(ifg_steps[t], d_c.unsqueeze(0), out=step[:3])  # d_i, d_f, d_g
        d_c = (d_c * f_steps[t]).addcmul_(d_i, peep_i).addcmul_(d_f, peep_f)
        flat = step.view(4 * hidden, batch)
        d_h = torch.addmm(d_out_steps[t - 1], w_hh_t, flat) if t > 0 else w_hh_t.mm(flat)
    return d_gates, d_h, d_c


_forward_impl, _backward_impl = script_or_eager(_fused_forward, _fused_backward, name="peephole LSTM")


class PeepholeFunction(torch.autograd.Function):
    """One peephole LSTM layer with a hand-written backward: no per-step autograd graph.

    Feature-major throughout: xw (T, 4H, B), h0 and c0 (H, B); returns the hidden states (T, H, B) and the last
    cell state (H, B). `PeepholeLSTM` converts from and to nn.LSTM's layouts.
    """

    @staticmethod
    def forward(ctx, xw: Tensor, w_hh: Tensor, peep: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor]:
        outputs, acts, cells, tanh_cells = _forward_impl(xw.contiguous(), w_hh.contiguous(), peep,
                                                         h0.contiguous(), c0.contiguous())
        ctx.save_for_backward(w_hh, peep, outputs, acts, cells, tanh_cells)
        return outputs[1:], cells[-1]

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable; first-order grads also under create_graph
    def backward(ctx, d_out: Tensor, d_cn: Tensor):
        w_hh, peep, outputs, acts, cells, tanh_cells = ctx.saved_tensors
        d_gates, d_h0, d_c0 = _backward_impl(d_out.contiguous(), d_cn.contiguous(), w_hh, peep, acts, cells,
                                             tanh_cells)
        n_steps, hidden, batch = acts.shape[0], acts.shape[2], acts.shape[3]
        d_gates = d_gates.view(n_steps, 4 * hidden, batch)
        d_w_hh = torch.bmm(d_gates, outputs[:-1].transpose(1, 2)).sum(0)  # each step's gates saw h(t-1)
        c_prev, c_new = cells[:-1], cells[1:]
        d_peep = torch.stack([(d_gates[:, :hidden] * c_prev).sum((0, 2)),
                              (d_gates[:, hidden : 2 * hidden] * c_prev).sum((0, 2)),
                              (d_gates[:, 3 * hidden :] * c_new).sum((0, 2))])
        return d_gates, d_w_hh, d_peep, d_h0, d_c0


class PeepholeLSTM(nn.Module):
    """Drop-in for `nn.LSTM` (gate order i, f, g, o; same parameter names) with diagonal peephole weights.

    Forward: `(input, (h0, c0) or None) -> (output, (h_n, c_n))`. The input projection of all time steps
    is one matrix product before the recurrence; the recurrence is a custom autograd function with a
    hand-written backward (`fused=True`) or plain autograd (`fused=False`, the reference; both are exact).
    Pure torch ops, so it runs on any device. Traced, scripted, compiled or exported it runs the reference path
    (the custom function does not export), as one `scan` operator under torch.export.
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
            if self.fused and not exporting():  # feature-major (T, 4H, B), in the weights' precision, even in autocast
                with torch.autocast(x.device.type, enabled=False):
                    dtype = w_hh.dtype
                    xw = torch.matmul(w_ih, x.to(dtype).transpose(1, 2))  # all steps in one product
                    if self.bias:
                        xw = xw + (getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}"))[:, None]
                    out, c = PeepholeFunction.apply(xw, w_hh, peep, hx[0][layer].to(dtype).t(),
                                                    hx[1][layer].to(dtype).t())
                    x, c = out.transpose(1, 2), c.t()  # (T, B, H) and (B, H) views
            else:
                xw = x.flatten(0, 1).mm(w_ih.t())
                if self.bias:
                    xw = xw + getattr(self, f"bias_ih_l{layer}") + getattr(self, f"bias_hh_l{layer}")
                xw = xw.view(x.shape[0], x.shape[1], -1)  # (T, B, 4H), all steps in one matrix product
                recurrence = peephole_scan if torch.compiler.is_exporting() else peephole_loop
                x, c = recurrence(xw, w_hh, peep, hx[0][layer], hx[1][layer])
            h_n.append(x[-1])
            c_n.append(c)
        output = x.transpose(0, 1) if self.batch_first else x
        return output, (torch.stack(h_n), torch.stack(c_n))


class PeepholeForecaster(RNNForecaster):
    """The stacked model with `PeepholeLSTM` layers: Dropout after each, a linear head on the last step.

    `fused=False` runs the plain-autograd reference recurrence (exact, slower). Keras initialization
    (`init: keras`) sets the LSTM weights and biases as for `stacked`; the peephole weights keep their uniform
    init in [-1/sqrt(hidden), 1/sqrt(hidden)].
    """

    def __init__(self, cell: Literal["peephole"] = "peephole", fused: bool = True, **kwargs) -> None:
        if cell != "peephole" or kwargs.get("bidirectional"):
            raise ConfigError(f"PeepholeForecaster takes model.cell=peephole and bidirectional=false, got "
                             f"cell={cell!r}, bidirectional={kwargs.get('bidirectional')!r}. Fix: use "
                             "lstm_zoo.models.RNNForecaster for other cells.")
        super().__init__(cell=cell, **kwargs)

    def recurrent_layer(self, input_size: int) -> nn.Module:
        return PeepholeLSTM(input_size, self.hparams.hidden_size, batch_first=True, fused=self.hparams.fused)
