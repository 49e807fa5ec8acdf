"""`KerasRMSprop`: RMSprop with the epsilon where Keras puts it, inside the square root."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer


class KerasRMSprop(Optimizer):
    """Keras' RMSprop (the tutorial's optimizer): v = rho * v + (1 - rho) * g^2; p -= lr * g / sqrt(v + eps).

    `torch.optim.RMSprop` divides by `sqrt(v) + eps` instead. With Keras' eps = 1e-7 the two differ where
    gradients are small (|g| ~ 1e-4 and below): Keras damps those steps (its denominator never drops below
    sqrt(eps) ~ 3e-4), torch takes full-size steps, so late epochs stay noisy. On the default job the Keras
    form gave a lower and steadier test RMSE (README, "Performance"). v starts at zero, as in Keras 3.
    `weight_decay` is torch's coupled L2 (added to the gradient), not Keras 3's decoupled decay; 0 by default.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1e-3, rho: float = 0.9,
                 eps: float = 1e-7, weight_decay: float = 0.0) -> None:
        if lr < 0.0 or not 0.0 <= rho < 1.0 or eps <= 0.0 or weight_decay < 0.0:
            raise ValueError(f"KerasRMSprop: lr={lr} must be >= 0, eps={eps} > 0, rho={rho} in [0, 1) and "
                             f"weight_decay={weight_decay} >= 0.")
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            velocities = []
            for p in params:
                if not self.state[p]:
                    self.state[p]["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                velocities.append(self.state[p]["velocity"])
            # batched over all parameters: a handful of kernel calls per step instead of several per tensor
            torch._foreach_mul_(velocities, group["rho"])
            torch._foreach_addcmul_(velocities, grads, grads, value=1.0 - group["rho"])
            denominators = torch._foreach_add(velocities, group["eps"])
            torch._foreach_sqrt_(denominators)
            torch._foreach_addcdiv_(params, grads, denominators, value=-group["lr"])
        return loss
