"""NLinear (Zeng et al. 2023): one linear layer on the window minus its last day, the last day added back."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lstm_zoo.errors import ConfigError
from lstm_zoo.models.base import Forecaster


class NLinearForecaster(Forecaster):
    """NLinear (Zeng, Chen, Zhang and Xu 2023, "Are Transformers Effective for Time Series Forecasting?", AAAI):
    subtract the window's last value, one linear layer from the window to each horizon step, add the last value back.
    Trained like the LSTMs (the same Lightning loop, optimizer, epochs and early stopping as dlinear).

    The subtraction makes the forecast follow the series' level: a constant added to the whole window shifts a `level`
    forecast by that constant, whatever the weights. The layer reads only the window's moves relative to its last day,
    so a test period priced above anything seen in training (the distribution shift the paper targets) does not take
    its inputs outside the training range by its level alone. As DLinear here, one layer reads the
    whole window (window x features, each feature minus its own last value). The target's last value is added back to
    a `level` forecast; `diff` and `log_return` targets are already changes from the last day, so nothing is added
    back and the forecast does not move with the level at all. Weights and bias start at zero: the first forecast is
    persistence (with a quantile head, the median; the other quantiles sit at fixed gaps around it).

    Args:
        target, features, target_transform: the data's (conf/model/nlinear.yaml reads them from `data.*`): which
            window column holds the target's level, and whether the targets are levels or changes.
    """

    def __init__(self, target: str = "High", features: Sequence[str] | None = None,
                 target_transform: str = "level", **kwargs) -> None:
        super().__init__(**kwargs)
        if features is not None and len(features) != self.hparams.n_features:
            raise ConfigError(f"model.features={features} has {len(features)} columns but the window has "
                              f"{self.hparams.n_features}. Fix: leave model.features as conf/model/nlinear.yaml "
                              "sets it (from data.features).")
        features = list(features) if features is not None else [target]  # the data module's default
        if target_transform not in ("level", "diff", "log_return"):
            raise ConfigError(f"model.target_transform={target_transform!r} is not one of ['level', 'diff', "
                              "'log_return'] (conf/model/nlinear.yaml reads it from data.target_transform).")
        if target_transform == "level" and target not in features:
            raise ConfigError(f"model=nlinear adds the last {target} back to its level forecast, but data.features="
                              f"{features} leaves {target} out of the window. Fix: add {target} to data.features, or "
                              "data.target_transform=diff.")
        # the window column whose last value is added back; None: change targets, nothing to add back
        self.target_feature = features.index(target) if target_transform == "level" else None
        self.linear = nn.Linear(self.hparams.window * self.hparams.n_features, self.output_size)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        last = x[:, -1:, :]  # (B, 1, F)
        out = self.linear((x - last).flatten(1))  # (B, horizon * outputs per step)
        if self.target_feature is None:
            return out
        out = out.unflatten(-1, (self.hparams.horizon, self.outputs_per_step))  # (B, H, Q)
        m = self.median_index  # the point forecast; a quantile head's other outputs are gaps around it
        median = out[..., m : m + 1] + last[:, :, self.target_feature, None]
        return torch.cat([out[..., :m], median, out[..., m + 1 :]], dim=-1).flatten(1)
