"""Encoder-decoder: an LSTM encodes the window, an LSTM decoder unrolls `horizon` steps on its own forecasts."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lstm_zoo.errors import ConfigError
from lstm_zoo.models.base import Forecaster
from lstm_zoo.models.init import init_weights


class EncoderDecoderForecaster(Forecaster):
    """Seq2seq forecaster: the decoder starts from the encoder's final state and a zero start token.

    Decoder step k reads the forecast of step k-1 (its own prediction). In training, each sample reads the true
    value of step k-1 instead with probability `teacher_forcing` (0: always its own prediction, 1: always truth).
    """

    def __init__(self, hidden_size: int = 50, num_layers: int = 2, dropout: float = 0.2,
                 teacher_forcing: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} is out of range: it must be in [0, 1).")
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ConfigError(f"model.teacher_forcing={teacher_forcing} is out of range: it must be in [0, 1].")
        between = dropout if num_layers > 1 else 0.0
        self.encoder = nn.LSTM(self.hparams.n_features, hidden_size, num_layers, batch_first=True, dropout=between)
        self.decoder = nn.LSTM(1, hidden_size, num_layers, batch_first=True, dropout=between)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, self.outputs_per_step)  # one value, or each quantile's
        init_weights(self, self.hparams.init)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """x (B, W, F) -> (B, output_size); pass the targets y (B, horizon) to allow teacher forcing."""
        _, state = self.encoder(x)
        step_input = x.new_zeros(x.shape[0], 1, 1)  # (B, 1 step, 1 value): the start token, shape[0] traces as dynamic
        forecasts = []
        for k in range(self.hparams.horizon):
            out, state = self.decoder(step_input, state)
            forecast = self.head(self.dropout(out))  # (B, 1, 1), or (B, 1, quantiles)
            forecasts.append(forecast)
            step_input = forecast[..., self.median_index, None]  # the point forecast: a quantile head's median
            if y is not None and self.hparams.teacher_forcing > 0:
                use_truth = torch.rand(len(x), 1, 1, device=x.device) < self.hparams.teacher_forcing
                step_input = torch.where(use_truth, y[:, k, None, None], step_input)
        return torch.cat(forecasts, 1).flatten(1)  # (B, horizon * outputs per step)

    def training_forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self(x, y)
