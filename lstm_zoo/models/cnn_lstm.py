"""CNN-LSTM: 1-D convolutions extract local patterns from the window, an LSTM reads the shorter sequence."""

from __future__ import annotations

from torch import Tensor, nn

from lstm_zoo.errors import ConfigError
from lstm_zoo.models.base import Forecaster
from lstm_zoo.models.init import init_weights


class CNNLSTMForecaster(Forecaster):
    """[Conv1d (no padding) -> ReLU -> optional MaxPool1d] x conv_layers, then an LSTM and a linear head.

    Each conv shortens the sequence by kernel_size - 1 and each pooling divides it by pool_size (floored),
    so the LSTM reads fewer, richer steps: 60 -> 58 -> 29 -> 27 -> 13 at the defaults.
    """

    def __init__(self, channels: int = 32, kernel_size: int = 3, conv_layers: int = 2, pool_size: int = 2,
                 hidden_size: int = 50, num_layers: int = 1, dropout: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} is out of range: it must be in [0, 1).")
        if min(channels, kernel_size, conv_layers, pool_size, hidden_size, num_layers) < 1:
            raise ConfigError("model.channels, kernel_size, conv_layers, pool_size, hidden_size and num_layers "
                             "must all be >= 1 (pool_size=1: no pooling).")
        length, blocks = self.hparams.window, []
        for layer in range(conv_layers):
            blocks += [nn.Conv1d(self.hparams.n_features if layer == 0 else channels, channels, kernel_size),
                       nn.ReLU()]
            length -= kernel_size - 1
            if pool_size > 1:
                blocks.append(nn.MaxPool1d(pool_size))
                length //= pool_size
            if length < 1:
                raise ConfigError(f"model: data.window={self.hparams.window} is too short for {conv_layers} conv "
                                 f"layer(s) of kernel_size={kernel_size} with pool_size={pool_size}: the sequence "
                                 f"is empty after conv layer {layer + 1}. Fix: fewer model.conv_layers, a smaller "
                                 "model.kernel_size or model.pool_size, or a longer data.window.")
        self.conv = nn.Sequential(*blocks)
        self.lstm = nn.LSTM(channels, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, self.output_size)
        init_weights(self, self.hparams.init)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, W, F) -> (B, C, W) -> (B, C, L) -> (B, L, C)
        return self.head(self.dropout(self.lstm(x)[0][:, -1]))  # (B, output_size)
