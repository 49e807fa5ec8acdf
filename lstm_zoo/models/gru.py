"""A GRU layer whose CPU recurrence is fused: torch's CPU GRU has no oneDNN kernel, so it runs step by step."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lstm_zoo.models.scripting import exporting, script_or_eager


def _fused_forward(xw: Tensor, w_hh: Tensor, b_hh: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """nn.GRU's recurrence without an autograd graph, feature-major, into preallocated buffers.

    xw (T, 3H, B) is the input projection of every step (b_ih included), gate order r, z, n as in nn.GRU;
    b_hh is (3H, 1) and h (H, B). Each step: gh = W_hh h + b_hh, r = sigmoid(xr + ghr), z = sigmoid(xz + ghz),
    n = tanh(xn + r * ghn), h' = n + z * (h - n). Returns the hidden states (T+1, H, B) with h0 first, the
    activations r, z, n (T, 3, H, B) and the recurrent projections gh (T, 3H, B): what the backward needs.
    """
    n_steps, hidden, batch = xw.shape[0], w_hh.shape[1], xw.shape[2]
    outputs = xw.new_empty(n_steps + 1, hidden, batch)
    acts = xw.new_empty(n_steps, 3, hidden, batch)
    ghs = xw.new_empty(n_steps, 3 * hidden, batch)
    outputs[0] = h
    xw_steps, act_steps, gh_steps, out_steps = xw.unbind(0), acts.unbind(0), ghs.unbind(0), outputs.unbind(0)
    for t in range(n_steps):
        x, gh, act, h = xw_steps[t], gh_steps[t], act_steps[t], out_steps[t]
        torch.addmm(b_hh, w_hh, h, out=gh)
        rz = act[:2].view(2 * hidden, batch)
        torch.add(x[: 2 * hidden], gh[: 2 * hidden], out=rz).sigmoid_()
        r, z, n = act.unbind(0)
        torch.addcmul(x[2 * hidden :], r, gh[2 * hidden :], out=n).tanh_()
        torch.lerp(n, h, z, out=out_steps[t + 1])
    return outputs, acts, ghs


def _fused_backward(d_out: Tensor, w_hh: Tensor, outputs: Tensor, acts: Tensor,
                    ghs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Hand-written BPTT of `_fused_forward`: d_out (T, H, B) -> grads of xw (T, 3H, B) and gh (T, 3H, B), dh0.

    With dh the gradient reaching h(t): d(pre-r) = dh (1-z)(1-n^2) ghn r(1-r), d(pre-z) = dh (h-n) z(1-z),
    d(pre-n) = dh (1-z)(1-n^2), and gh's n rows get d(pre-n) * r. Everything but dh is known after the forward,
    so the factors are computed for all steps at once and each step is one multiply, one `addcmul` and one
    matrix product.
    """
    n_steps, hidden, batch = acts.shape[0], acts.shape[2], acts.shape[3]
    r, z, n = acts.unbind(1)
    d_pre_n = (1 - z) * (1 - n * n)
    factors = torch.stack([d_pre_n * ghs[:, 2 * hidden :] * r * (1 - r), (outputs[:-1] - n) * z * (1 - z),
                           d_pre_n * r], 1)  # (T, 3, H, B): d(gh) / dh
    w_hh_t = w_hh.t()
    d_gh = torch.empty_like(acts)
    d_hs = torch.empty_like(n)
    d_out_steps, d_gh_steps, d_h_steps = d_out.unbind(0), d_gh.unbind(0), d_hs.unbind(0)
    factor_steps, z_steps = factors.unbind(0), z.unbind(0)
    d_h_steps[n_steps - 1].copy_(d_out_steps[n_steps - 1])  # dL/dh(t): from the output at t and from step t+1
    d_h0 = d_out.new_empty(hidden, batch)
    for t in range(n_steps - 1, -1, -1):
        d_h, step = d_h_steps[t], d_gh_steps[t]
        torch.mul(factor_steps[t], d_h.unsqueeze(0), out=step)
        if t > 0:
            torch.addmm(torch.addcmul(d_out_steps[t - 1], d_h, z_steps[t]), w_hh_t, step.view(3 * hidden, batch),
                        out=d_h_steps[t - 1])
        else:
            torch.addmm(d_h * z_steps[t], w_hh_t, step.view(3 * hidden, batch), out=d_h0)
    d_xw = torch.cat([d_gh[:, :2], (d_hs * d_pre_n).unsqueeze(1)], 1)
    return d_xw.view(n_steps, 3 * hidden, batch), d_gh.view(n_steps, 3 * hidden, batch), d_h0


_forward_impl, _backward_impl = script_or_eager(_fused_forward, _fused_backward, name="fused GRU")


class GRUFunction(torch.autograd.Function):
    """One GRU layer's recurrence with a hand-written backward, feature-major: xw (T, 3H, B), h0 (H, B)."""

    @staticmethod
    def forward(ctx, xw: Tensor, w_hh: Tensor, b_hh: Tensor, h0: Tensor) -> Tensor:
        outputs, acts, ghs = _forward_impl(xw.contiguous(), w_hh.contiguous(), b_hh.contiguous(), h0.contiguous())
        ctx.save_for_backward(w_hh, outputs, acts, ghs)
        return outputs[1:]

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable; first-order grads also under create_graph
    def backward(ctx, d_out: Tensor):
        w_hh, outputs, acts, ghs = ctx.saved_tensors
        d_xw, d_gh, d_h0 = _backward_impl(d_out.contiguous(), w_hh, outputs, acts, ghs)
        d_w_hh = torch.bmm(d_gh, outputs[:-1].transpose(1, 2)).sum(0)  # each step's gh saw h(t-1)
        d_b_hh = d_gh.sum((0, 2)).unsqueeze(1)
        return d_xw, d_w_hh, d_b_hh, d_h0


class FusedGRU(nn.GRU):
    """`nn.GRU` (same parameters, state dict and results) whose CPU forward and backward are fused.

    On CPU, for a batched float tensor input in one direction, outside autocast, the input projection of all
    steps is one matrix product and the recurrence is `GRUFunction`. Everything else runs `nn.GRU` itself: other
    devices (cuDNN), bidirectional layers, packed sequences, `bias=False`, CPU autocast (nn.GRU computes in
    bf16 there), inputs or states nn.GRU would reject (its own error message then), tracing, `torch.compile` and
    `torch.export` / ONNX (nn.GRU exports as one op), and `fused=False`.
    """

    def __init__(self, *args, fused: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fused = fused

    def _runs_fused(self, x, hx: Tensor | None) -> bool:
        if not (self.fused and isinstance(x, Tensor) and x.dim() == 3 and x.device.type == "cpu"
                and not self.bidirectional and self.bias and not torch.is_autocast_enabled("cpu")
                and not exporting()):  # traced, compiled or exported: nn.GRU's one op
            return False
        batch = x.shape[0] if self.batch_first else x.shape[1]
        return (x.dtype == self.weight_hh_l0.dtype and x.shape[2] == self.input_size and x.numel() > 0
                and (hx is None or (hx.dtype == x.dtype and hx.shape == (self.num_layers, batch, self.hidden_size))))

    def forward(self, x, hx: Tensor | None = None):
        if not self._runs_fused(x, hx):
            return super().forward(x, hx)
        x = x.transpose(0, 1) if self.batch_first else x  # (T, B, F)
        if hx is None:
            hx = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)
        h_n = []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = nn.functional.dropout(x, self.dropout, training=True)
            w_ih, w_hh = getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(self, f"bias_ih_l{layer}"), getattr(self, f"bias_hh_l{layer}")
            # all steps' input projection at once, feature-major (T, 3H, B)
            xw = torch.baddbmm(b_ih[:, None], w_ih.expand(x.shape[0], -1, -1), x.transpose(1, 2))
            out = GRUFunction.apply(xw, w_hh, b_hh[:, None], hx[layer].t())  # (T, H, B)
            x = out.transpose(1, 2)  # (T, B, H) view
            h_n.append(x[-1])
        output = x.transpose(0, 1) if self.batch_first else x
        return output, torch.stack(h_n)
