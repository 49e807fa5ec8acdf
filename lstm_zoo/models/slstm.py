"""sLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory", section 2.2 and appendix A): exponential
input gate, sigmoid or exponential forget gate, normalizer state, recurrent weights per head; and its forecaster.

The paper (and NX-AI's `xlstm` package, `blocks/slstm/src/vanilla/slstm.py`), with gate inputs
i~, f~, z~, o~ = W x(t) + R h(t-1) + b and R block-diagonal over `num_heads` heads:

    c(t) = f' c(t-1) + i' tanh(z~)        n(t) = f' n(t-1) + i'        h(t) = sigmoid(o~) c(t) / n(t)
    m(t) = max(log f + m(t-1), i~)        i' = exp(i~ - m(t))          f' = exp(log f + m(t-1) - m(t))

with log f = logsigmoid(f~) (NX-AI's default) or f~ (`forget_gate=exp`). The stabilizer m cancels in c / n. The
`reference` mode runs exactly these equations through autograd. The `sequential` mode (default) takes the
stabilizer m(t) = log n(t), the log normalizer: then n = 1, c = c / n =: h~, f' = 1 - w and i' = w with

    w(t) = sigmoid(i~ - log f - m(t-1)),   m(t) = logaddexp(i~, log f + m(t-1)),   h~(t) = lerp(h~(t-1), tanh(z~), w)

and h(t) = sigmoid(o~) h~(t): the same outputs and gradients (tested to 1e-10 in float64) with fewer ops per
step, in a custom autograd function whose loops are TorchScript and whose backward is hand-written. A fresh
state is h = c = n = 0 and m = -inf, so the first step has m(1) = i~ as NX-AI's `n == 0` rule; a given state row
with n = 0 starts fresh. States are (h, c, n, m) up to the stabilizer's scale (c e^m and n e^m are what count):
the sequential mode returns (h, h~, 1, log n), the reference mode the paper's c, n and m.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.functional import logsigmoid

from lstm_zoo.errors import ConfigError
from lstm_zoo.models.rnn import RNNForecaster
from lstm_zoo.models.scripting import exporting, script_or_eager

MODES = ("sequential", "reference")
FORGET_GATES = ("sigmoid", "exp")


# the recurrence's gate order f, i, z, o (parameters: i, f, z, o): i~, z~, o~ adjacent for one sigmoid_ per step
_GATE_ORDER = [1, 0, 2, 3]


def _fused_forward(xw: Tensor, r: Tensor, h: Tensor, ht: Tensor, ell: Tensor,
                   exp_forget: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The sequential mode's forward, feature-major and head-major, without an autograd graph.

    xw (T, 4H, B): every step's gate inputs (biases included), rows [head][gate f, i, z, o][unit]; r (K, 4 * hd,
    hd): each head's recurrent block, rows [gate][unit]; h, ht (normalized cell), ell (log normalizer) (K, hd, B).
    Per step: one batched product over the heads (4.5 us at 2 heads of 25, 2.7 at 5 of 10, dense (4H, H) 7.6), then
    u = log f + m(t-1), m(t) = logaddexp(i~, u), w = sigmoid(i~ - u), h~(t) = lerp(h~(t-1), tanh(z~), w),
    h(t) = sigmoid(o~) h~(t), with tanh(x) = 2 sigmoid(2x) - 1 (a tanh costs three sigmoids here) so that one
    sigmoid_ covers i~ - u, 2 z~ and o~. Returns h and h~ (T+1, K, hd, B) with the initial state first, the gate
    values (T, K, 4, hd, B) (f~ raw, w, tanh(z~), sigmoid(o~)) and the last log normalizer (K, hd, B).
    """
    n_steps, batch = xw.shape[0], xw.shape[2]
    heads, head = r.shape[0], r.shape[2]
    acts = xw.clone().view(n_steps, heads, 4, head, batch)  # one copy: each step then adds R h(t-1) in place
    acts[:, :, 2].mul_(2.0)
    r = r.clone()
    r.view(heads, 4, head, head)[:, 2].mul_(2.0)
    outputs, cells = xw.new_empty(n_steps + 1, heads, head, batch), xw.new_empty(n_steps + 1, heads, head, batch)
    outputs[0], cells[0] = h, ht
    act_steps, out_steps, cell_steps = acts.unbind(0), outputs.unbind(0), cells.unbind(0)
    for t in range(n_steps):
        gates = act_steps[t]
        gates.view(heads, 4 * head, batch).baddbmm_(r, out_steps[t])
        f_pre, i_pre, z, o = gates.unbind(1)
        u = (f_pre if exp_forget else logsigmoid(f_pre)) + ell  # log f + m(t-1)
        ell = torch.logaddexp(i_pre, u)
        i_pre.sub_(u)
        gates[:, 1:].sigmoid_()  # w, (1 + tanh(z~)) / 2, o
        z.mul_(2.0).sub_(1.0)
        torch.lerp(cell_steps[t], z, i_pre, out=cell_steps[t + 1])
        torch.mul(o, cell_steps[t + 1], out=out_steps[t + 1])
    return outputs, cells, acts, ell


def _fused_backward(d_out: Tensor, d_ht: Tensor, d_ell: Tensor, r: Tensor, cells: Tensor, acts: Tensor,
                    exp_forget: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Hand-written BPTT of `_fused_forward`: d_out (T, K, hd, B), d_ht and d_ell (K, hd, B) (the last state's).

    With dh the gradient reaching h(t) and dh~ that reaching h~(t): d o~ = dh h~ o (1-o), dh~ += dh o,
    d z~ = dh~ w (1-z^2), d(i~ - u) = dh~ w (1-w) (z - h~(t-1)), d i~ = that + dm w, du = dm - d i~ (dm: the grad
    of m(t) = logaddexp(i~, u)), d f~ = du sigmoid(-f~) (du for exp), dh~(t-1) = dh~ (1-w), dm(t-1) = du.
    Returns the gate-input grads (T, K, 4, hd, B) and those of h0, h~0 and m0 (K, hd, B).
    """
    n_steps, heads, head, batch = acts.shape[0], acts.shape[1], acts.shape[3], acts.shape[4]
    f_pre, w, z, o = acts.unbind(2)
    keep = 1 - w
    o_factor = o * (1 - o) * cells[1:]
    z_factor = w * (1 - z * z)
    w_factor = w * keep * (z - cells[:-1])
    f_factor = f_pre if exp_forget else torch.sigmoid(-f_pre)  # unused for exp
    r_t = r.transpose(1, 2)
    d_gates = torch.empty_like(acts)
    d_out = d_out.clone()  # each step adds R^T d(gates) into d_out(t-1) in place
    d_out_steps, d_gate_steps, o_steps, w_steps, keep_steps = (d_out.unbind(0), d_gates.unbind(0), o.unbind(0),
                                                               w.unbind(0), keep.unbind(0))
    o_factor_steps, z_factor_steps, w_factor_steps = o_factor.unbind(0), z_factor.unbind(0), w_factor.unbind(0)
    f_factor_steps = f_factor.unbind(0)
    d_h = d_out_steps[n_steps - 1]
    for t in range(n_steps - 1, -1, -1):
        step = d_gate_steps[t]
        d_f, d_i, d_z, d_o = step.unbind(1)
        torch.mul(d_h, o_factor_steps[t], out=d_o)
        d_ht = torch.addcmul(d_ht, d_h, o_steps[t])
        torch.mul(d_ht, z_factor_steps[t], out=d_z)
        torch.addcmul(d_ht * w_factor_steps[t], d_ell, w_steps[t], out=d_i)
        if exp_forget:
            d_ell = torch.sub(d_ell, d_i, out=d_f)
        else:
            d_ell = d_ell - d_i
            torch.mul(d_ell, f_factor_steps[t], out=d_f)
        d_ht = d_ht * keep_steps[t]
        flat = step.view(heads, 4 * head, batch)
        d_h = d_out_steps[t - 1].baddbmm_(r_t, flat) if t > 0 else torch.bmm(r_t, flat)
    return d_gates, d_h, d_ht, d_ell


_forward_impl, _backward_impl = script_or_eager(_fused_forward, _fused_backward, name="sLSTM")


@contextmanager
def single_threaded():
    """One intra-op thread for the per-step ops: bmm and logsigmoid split even (5, 10, 32) tensors over threads
    (4.5 against 2.9 us a call at 2 threads here), and on a busy machine each split can wait milliseconds for the
    other thread. The same median epoch, fewer stalls (ratio of summed step times to stacked's 1.02 against 1.18)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class SLSTMFunction(torch.autograd.Function):
    """The sequential mode: xw (T, 4H, B) and r (K, 4 * hd, hd) in `_fused_forward`'s layout, h0, h~0, m0
    (K, hd, B) -> h (T, K, hd, B), h~(T) and m(T) (K, hd, B)."""

    @staticmethod
    def forward(ctx, xw: Tensor, r: Tensor, h0: Tensor, ht0: Tensor, ell0: Tensor,
                exp_forget: bool) -> tuple[Tensor, Tensor, Tensor]:
        with single_threaded():
            outputs, cells, acts, ell = _forward_impl(xw.contiguous(), r.contiguous(), h0.contiguous(),
                                                      ht0.contiguous(), ell0.contiguous(), exp_forget)
        ctx.exp_forget = exp_forget
        ctx.save_for_backward(r, outputs, cells, acts)
        return outputs[1:], cells[-1], ell

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable; first-order grads also under create_graph
    def backward(ctx, d_out: Tensor, d_ht: Tensor, d_ell: Tensor):
        r, outputs, cells, acts = ctx.saved_tensors
        with single_threaded():
            d_gates, d_h0, d_ht0, d_ell0 = _backward_impl(d_out.contiguous(), d_ht.contiguous(), d_ell.contiguous(),
                                                          r, cells, acts, ctx.exp_forget)
        n_steps, heads, head, batch = acts.shape[0], acts.shape[1], acts.shape[3], acts.shape[4]
        # each step's gates saw h(t-1): one batched product over steps and heads, summed over steps
        d_r = torch.bmm(d_gates.view(n_steps * heads, 4 * head, batch),
                        outputs[:-1].reshape(n_steps * heads, head, batch).transpose(1, 2))
        d_r = d_r.view(n_steps, heads, 4 * head, head).sum(0)
        return d_gates.view(n_steps, 4 * heads * head, batch), d_r, d_h0, d_ht0, d_ell0, None


class SLSTM(nn.Module):
    """One sLSTM layer, a drop-in for a one-layer `nn.LSTM`: `(input, (h0, c0, n0, m0) or None) -> (output,
    (h_n, c_n, n_n, m_n))`, states (1, B, H).

    Parameters as nn.LSTM's, so `init_weights` treats it as an LSTM: `weight_ih_l0` (4H, input_size) and
    `bias_ih_l0` (4H) in gate order i, f, z, o; `weight_hh_l0` (num_heads, 4 * head_size, head_size), head k's
    block mapping its units of h(t-1) to its units of the four gates (rows gate-major).
    """

    def __init__(self, input_size: int, hidden_size: int, num_heads: int = 1, batch_first: bool = False,
                 mode: Literal["sequential", "reference"] = "sequential",
                 forget_gate: Literal["sigmoid", "exp"] = "sigmoid") -> None:
        super().__init__()
        check_slstm_fields(hidden_size, num_heads, mode, forget_gate)
        self.input_size, self.hidden_size, self.num_heads = input_size, hidden_size, num_heads
        self.batch_first, self.mode, self.forget_gate = batch_first, mode, forget_gate
        head = hidden_size // num_heads
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(num_heads, 4 * head, head))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)  # nn.LSTM's init (init=torch); init=keras replaces it
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
        x = x.transpose(0, 1) if self.batch_first else x  # (T, B, F): time-major for the recurrence
        with torch.autocast(x.device.type, enabled=False):  # the recurrence runs in the weights' precision
            dtype = self.weight_ih_l0.dtype
            x = x.to(dtype)
            zeros = x.new_zeros(x.shape[1], self.hidden_size)
            h, c, n, m = (zeros, zeros, zeros, torch.full_like(zeros, -math.inf)) if state is None else \
                (s[0].to(dtype) for s in state)
            if self.mode == "reference" or exporting():  # the custom autograd function does not export
                out, state = self.reference(x, h, c, n, m)
            else:  # normalized state: h~ = c / n and m + log n (0 and -inf where n = 0, a fresh state)
                fresh = n <= 0
                ht0 = torch.where(fresh, 0.0, c / torch.where(fresh, 1.0, n))
                ell0 = torch.where(fresh, -math.inf, m + torch.log(torch.where(fresh, 1.0, n)))
                heads, head, (n_steps, batch) = self.num_heads, self.hidden_size // self.num_heads, x.shape[:2]
                # the recurrence's layout: rows [head][gate f, i, z, o][unit] (a few hundred weights reordered)
                w_ih = self.weight_ih_l0.view(4, heads, head, -1)[_GATE_ORDER].transpose(0, 1).reshape(
                    4 * self.hidden_size, -1)
                b_ih = self.bias_ih_l0.view(4, heads, head)[_GATE_ORDER].transpose(0, 1).reshape(-1, 1)
                r = self.weight_hh_l0.view(heads, 4, head, head)[:, _GATE_ORDER].reshape(heads, 4 * head, head)
                xw = torch.baddbmm(b_ih, w_ih.expand(n_steps, -1, -1), x.transpose(1, 2))  # (T, 4H, B), all steps
                states = (s.t().reshape(heads, head, batch) for s in (h, ht0, ell0))
                out, ht, ell = SLSTMFunction.apply(xw, r, *states, self.forget_gate == "exp")
                out = out.reshape(n_steps, self.hidden_size, batch).permute(0, 2, 1)  # (T, B, H) view
                ht, ell = ht.reshape(self.hidden_size, batch).t(), ell.reshape(self.hidden_size, batch).t()
                state = (out[-1], ht, torch.ones_like(ht), ell)
        output = out.transpose(0, 1) if self.batch_first else out
        return output, tuple(s.unsqueeze(0) for s in state)

    def reference(self, x: Tensor, h: Tensor, c: Tensor, n: Tensor, m: Tensor
                  ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
        """The paper's equations step by step (NX-AI's vanilla sLSTM), with autograd; x (T, B, F)."""
        heads, head = self.num_heads, self.hidden_size // self.num_heads
        blocks = self.weight_hh_l0.view(heads, 4, head, head)
        xw = nn.functional.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # (T, B, 4H)
        outputs = []
        for t in range(x.shape[0]):  # per head: (B, heads, head) x (heads, 4, head, head) -> (B, 4, heads, head)
            recurrent = torch.einsum("bkj,kgij->bgki", h.view(-1, heads, head), blocks).reshape(h.shape[0], -1)
            i_pre, f_pre, z_pre, o_pre = (xw[t] + recurrent).chunk(4, 1)
            log_f = f_pre if self.forget_gate == "exp" else logsigmoid(f_pre)
            m_new = torch.maximum(log_f + m, i_pre)
            i, f = torch.exp(i_pre - m_new), torch.exp(log_f + m - m_new)
            c = f * c + i * torch.tanh(z_pre)
            n = f * n + i
            h = torch.sigmoid(o_pre) * c / n
            m = m_new
            outputs.append(h)
        return torch.stack(outputs), (h, c, n, m)


def check_slstm_fields(hidden_size: int, num_heads: int, mode: str, forget_gate: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"model.mode={mode!r} is not one of {list(MODES)} (sLSTM's gates read h(t-1): it has no "
                          "parallel scan).")
    if forget_gate not in FORGET_GATES:
        raise ConfigError(f"model.forget_gate={forget_gate!r} is not one of {list(FORGET_GATES)}.")
    if num_heads < 1 or hidden_size % num_heads:
        divisors = [d for d in range(1, hidden_size + 1) if hidden_size % d == 0]
        raise ConfigError(f"model.num_heads={num_heads} must divide model.hidden_size={hidden_size}: one of "
                          f"{divisors}.")


class SLSTMForecaster(RNNForecaster):
    """The stacked model with sLSTM layers: Dropout after each, a linear head on the last step."""

    def __init__(self, cell: Literal["slstm"] = "slstm", num_heads: int = 2,
                 mode: Literal["sequential", "reference"] = "sequential",
                 forget_gate: Literal["sigmoid", "exp"] = "sigmoid", **kwargs) -> None:
        if cell != "slstm" or kwargs.get("bidirectional"):
            raise ConfigError(f"SLSTMForecaster takes model.cell=slstm and bidirectional=false, got cell={cell!r}, "
                              f"bidirectional={kwargs.get('bidirectional')!r}.")
        super().__init__(cell=cell, **kwargs)  # each SLSTM layer checks num_heads, mode and forget_gate

    def recurrent_layer(self, input_size: int) -> nn.Module:
        hp = self.hparams
        return SLSTM(input_size, hp.hidden_size, hp.num_heads, batch_first=True, mode=hp.mode,
                     forget_gate=hp.forget_gate)
