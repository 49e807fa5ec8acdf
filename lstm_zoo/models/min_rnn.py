"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?", sections 3.1-3.2 and appendix B), whose
gates read only the input, so that the recurrence is elementwise; and their forecaster.

Both cells are h(t) = (1 - z(t)) h(t-1) + z(t) h~(t), with h~ = g(W_h x + b_h) and g(k) = k + 0.5 for k >= 0,
sigmoid(k) otherwise (the paper's positive activation). minGRU: z = sigmoid(W_z x + b_z). minLSTM: f = sigmoid(W_f x
+ b_f), i = sigmoid(W_i x + b_i), h(t) = f/(f + i) h(t-1) + i/(f + i) h~(t), i.e. z = i/(f + i). Every step's gate
inputs come from one batched matrix product before the recurrence, gate-major (gates, T, B, H) so that each gate
is one contiguous block (elementwise ops on strided column slices cost 4x here). Three ways to run the
recurrence (`mode`), equal to rounding (tested):

- `sequential` (default): a custom autograd function whose loops are TorchScript, one `lerp` per forward step and
  one `addcmul` per backward step; every other factor is computed for all steps at once;
- `parallel`: the log-space scan of Heinsen (2023) as in the paper's appendix B, through autograd: a handful of
  whole-window ops, no loop over time (on a CPU `logcumsumexp` alone costs more than the sequential loops);
- `reference`: the paper's equations step by step, through autograd.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.functional import logsigmoid

from lstm_zoo.errors import ConfigError
from lstm_zoo.models.rnn import RNNForecaster
from lstm_zoo.models.scripting import exporting, script_or_eager

MODES = ("sequential", "parallel", "reference")


def _scan_forward(cand: Tensor, z: Tensor, h0: Tensor) -> Tensor:
    """h(t) = lerp(h(t-1), cand(t), z(t)) for every step: cand, z (T, B, H), h0 (B, H) -> (T+1, B, H), h0 first."""
    out = cand.new_empty(cand.shape[0] + 1, cand.shape[1], cand.shape[2])
    out[0] = h0
    out_steps, cand_steps, z_steps = out.unbind(0), cand.unbind(0), z.unbind(0)
    for t in range(cand.shape[0]):
        torch.lerp(out_steps[t], cand_steps[t], z_steps[t], out=out_steps[t + 1])
    return out


def _scan_backward(d_out: Tensor, keep: Tensor) -> Tensor:
    """The gradient reaching each h(t): g(t) = d_out(t) + keep(t+1) g(t+1), keep = 1 - z; (T, B, H)."""
    grad = torch.empty_like(d_out)
    grad_steps, d_steps, keep_steps = grad.unbind(0), d_out.unbind(0), keep.unbind(0)
    last = d_out.shape[0] - 1
    grad_steps[last].copy_(d_steps[last])
    for t in range(last - 1, -1, -1):
        torch.addcmul(d_steps[t], keep_steps[t + 1], grad_steps[t + 1], out=grad_steps[t])
    return grad


_scan_forward_impl, _scan_backward_impl = script_or_eager(_scan_forward, _scan_backward, name="minGRU/minLSTM scan")


class MinRNNFunction(torch.autograd.Function):
    """The `sequential` mode: xw (gates, T, B, H) of one layer (the candidate's inputs last), h0 (B, H) ->
    h (T, B, H), with a hand-written backward; `cell` (a MinGRU or MinLSTM) says how z depends on its gates."""

    @staticmethod
    def forward(ctx, xw: Tensor, h0: Tensor, cell: MinRNN) -> Tensor:
        z, saved = cell.update_gate(xw[:-1])
        sig_cand = torch.sigmoid(xw[-1])
        cand = torch.maximum(xw[-1] + 0.5, sig_cand)  # g(k): sigmoid(k) <= k + 0.5 exactly when k >= 0
        out = _scan_forward_impl(cand, z, h0.contiguous())
        ctx.cell = cell
        ctx.save_for_backward(xw, z, sig_cand, out, *saved)
        return out[1:]

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable; first-order grads also under create_graph
    def backward(ctx, d_out: Tensor):
        xw, z, sig_cand, out, *saved = ctx.saved_tensors
        keep = 1 - z
        grad = _scan_backward_impl(d_out.contiguous(), keep)
        d_h0 = keep[0] * grad[0]
        d_xw = torch.empty_like(xw)
        # d(logit of z) = grad (cand - h(t-1)) z (1 - z) = grad (h(t) - h(t-1)) (1 - z); the cell takes it from there
        torch.sub(out[1:], out[:-1], out=d_xw[0]).mul_(grad).mul_(keep)
        ctx.cell.update_gate_backward(d_xw[:-1], saved)
        # d(candidate input) = grad z g'(k), g' = 1 for k >= 0 (as the paper's `where`), sigmoid'(k) otherwise
        step = torch.ge(xw[-1], 0, out=torch.empty_like(z))  # 1.0 / 0.0 (a float `where` costs 20x here)
        slope = torch.maximum(step, (1 - sig_cand).mul_(sig_cand))
        torch.mul(grad.mul_(z), slope, out=d_xw[-1])
        return d_xw, d_h0, None


class MinRNN(nn.Module):
    """One minGRU / minLSTM layer, a drop-in for a one-layer `nn.GRU`: `(input, h0 or None) -> (output, h_n)`,
    h0 and h_n (1, B, H). The input projection is an `nn.Linear` named `linear` (its output blocks: the gates, then
    the candidate), so `init_weights` gives it Glorot-uniform weights and zero biases under `init=keras`."""

    gates = 2  # blocks of the projection: the update gate's inputs, then the candidate's

    def __init__(self, input_size: int, hidden_size: int, batch_first: bool = False,
                 mode: Literal["sequential", "parallel", "reference"] = "sequential") -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"model.mode={mode!r} is not one of {list(MODES)}.")
        self.input_size, self.hidden_size, self.batch_first, self.mode = input_size, hidden_size, batch_first, mode
        self.linear = nn.Linear(input_size, self.gates * hidden_size)  # torch's Linear init under init=torch

    def update_gate(self, k: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """z (T, B, H) from the gate blocks k (gates - 1, T, B, H), and what `update_gate_backward` needs."""
        return torch.sigmoid(k[0]), ()

    def update_gate_backward(self, d_k: Tensor, saved: tuple[Tensor, ...]) -> None:
        """Turns d_k[0], on entry the gradient of z's logit, into the gate blocks' gradients, in place."""

    def z_logit(self, k: Tensor) -> Tensor:
        """The logit of z, for the log-space scan."""
        return k[0]

    def coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """(1 - z, z) as the paper writes them, for the reference mode."""
        z = torch.sigmoid(k[0])
        return 1 - z, z

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = x.transpose(0, 1) if self.batch_first else x  # (T, B, F): time-major for the recurrence
        n_steps, batch = x.shape[0], x.shape[1]
        with torch.autocast(x.device.type, enabled=False):  # the recurrence runs in the weights' precision
            weight, bias = self.linear.weight, self.linear.bias
            x = x.to(weight.dtype).reshape(n_steps * batch, self.input_size)
            # (gates, T*B, H): every step's inputs of every gate in one batched product, each gate contiguous
            xw = torch.baddbmm(bias.view(self.gates, 1, self.hidden_size), x.expand(self.gates, -1, -1),
                               weight.view(self.gates, self.hidden_size, self.input_size).transpose(1, 2))
            xw = xw.view(self.gates, n_steps, batch, self.hidden_size)
            h = xw.new_zeros(batch, self.hidden_size) if h0 is None else h0[0].to(xw.dtype)
            if exporting():  # the custom autograd function and logcumsumexp do not export: the plain steps do
                out = self.reference(xw, h)
            elif self.mode == "sequential":
                out = MinRNNFunction.apply(xw, h, self)
            elif self.mode == "parallel":
                out = self.log_space_scan(xw, h)
            else:
                out = self.reference(xw, h)
        output = out.transpose(0, 1) if self.batch_first else out
        return output, out[-1].unsqueeze(0)

    def log_space_scan(self, xw: Tensor, h0: Tensor) -> Tensor:
        """Heinsen (2023): h(t) = a(t) h(t-1) + b(t) for all t at once, from log a = log(1 - z), log b = log z + log h~:
        h(t) = exp(a*(t)) h0 + exp(a*(t) + logcumsumexp(log b - a*)(t)), a* the cumulative sum of log a; h0 enters
        linearly (any sign). a* and the logcumsumexp grow like the window and cancel in their sum, so they are
        accumulated in float64: in float32 the relative error would be eps * |a*|, 2e-6 at window 60 already."""
        logit, k_cand = self.z_logit(xw[:-1]), xw[-1]
        log_cand = torch.where(k_cand >= 0, torch.log(torch.relu(k_cand) + 0.5), logsigmoid(k_cand))
        a_star = torch.cumsum(logsigmoid(-logit), 0, dtype=torch.float64)  # log of the product of (1 - z) to t
        log_h = a_star + torch.logcumsumexp(logsigmoid(logit) + log_cand - a_star, 0)
        return (torch.exp(log_h) + torch.exp(a_star) * h0).to(xw.dtype)

    def reference(self, xw: Tensor, h: Tensor) -> Tensor:
        """The paper's recurrence step by step, with autograd: h(t) = (1 - z) h(t-1) + z g(k)."""
        k_cand = xw[-1]
        cand = torch.where(k_cand >= 0, k_cand + 0.5, torch.sigmoid(k_cand))
        keep, update = self.coefficients(xw[:-1])
        outputs = []
        for t in range(xw.shape[1]):
            h = keep[t] * h + update[t] * cand[t]
            outputs.append(h)
        return torch.stack(outputs)


class MinGRU(MinRNN):
    """minGRU: z = sigmoid(W_z x + b_z), h~ = g(W_h x + b_h), h(t) = (1 - z) h(t-1) + z h~."""


class MinLSTM(MinRNN):
    """minLSTM: f, i = sigmoid(W_f x + b_f), sigmoid(W_i x + b_i); h(t) = f/(f+i) h(t-1) + i/(f+i) g(W_h x + b_h).

    Projection blocks: forget gate, input gate, candidate. z = i/(f+i) = sigmoid(log i - log f), so the logit's
    gradient reaches k_i times (1 - i) and k_f times -(1 - f).
    """

    gates = 3

    def update_gate(self, k: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        gates = torch.sigmoid(k)  # (2, T, B, H): f, i
        z = gates[1] / (gates[0] + gates[1])  # a third of the cost of logsigmoids here
        if not bool(torch.isfinite(z.sum())):  # 0 / 0 where f = i = 0 (both inputs below -88 in float32)
            z = torch.sigmoid(self.z_logit(k))
        return z, (gates,)

    def update_gate_backward(self, d_k: Tensor, saved: tuple[Tensor, ...]) -> None:
        f, i = saved[0]
        torch.addcmul(d_k[0], d_k[0], i, value=-1.0, out=d_k[1])  # d_logit (1 - i)
        d_k[0].addcmul_(d_k[0], f, value=-1.0).neg_()  # -d_logit (1 - f)

    def z_logit(self, k: Tensor) -> Tensor:
        return logsigmoid(k[1]) - logsigmoid(k[0])

    def coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        f, i = torch.sigmoid(k)
        return f / (f + i), i / (f + i)


class MinRNNForecaster(RNNForecaster):
    """The stacked model with minGRU (`cell=min_gru`) or minLSTM (`cell=min_lstm`) layers: Dropout after each, a
    linear head on the last step. `mode` picks how the recurrence runs (see the module docstring); all are exact."""

    def __init__(self, cell: Literal["min_gru", "min_lstm"] = "min_gru",
                 mode: Literal["sequential", "parallel", "reference"] = "sequential", **kwargs) -> None:
        if cell not in ("min_gru", "min_lstm") or kwargs.get("bidirectional"):
            raise ConfigError(f"MinRNNForecaster takes model.cell=min_gru or min_lstm and bidirectional=false, got "
                              f"cell={cell!r}, bidirectional={kwargs.get('bidirectional')!r}.")
        super().__init__(cell=cell, **kwargs)  # each layer checks the mode

    def recurrent_layer(self, input_size: int) -> nn.Module:
        layer = MinGRU if self.hparams.cell == "min_gru" else MinLSTM
        return layer(input_size, self.hparams.hidden_size, batch_first=True, mode=self.hparams.mode)
