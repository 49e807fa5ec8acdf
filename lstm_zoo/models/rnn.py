"""Recurrent forecasters that differ only in constructor arguments: vanilla, stacked, bidirectional, GRU."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lstm_zoo.errors import ConfigError
from lstm_zoo.models.base import Forecaster
from lstm_zoo.models.dropout import FastDropout
from lstm_zoo.models.gru import FusedGRU
from lstm_zoo.models.init import init_weights

CELLS = {"lstm": nn.LSTM, "gru": FusedGRU}  # FusedGRU is nn.GRU with a fused CPU recurrence (2x faster there)


class RNNForecaster(Forecaster):
    """Keras-style stack of recurrent layers, each followed by Dropout, then a linear head on the last step.

    `nn.LSTM(num_layers=4, dropout=0.2)` drops only *between* layers; the tutorial's Keras model drops after
    every layer, the last one included, so each layer is its own module here. As in Keras, where the last
    LSTM returns only its final state, the last layer's Dropout acts on that state alone (the same distribution
    as dropping the whole sequence and then taking the last step, at 1/window of the cost). With
    `bidirectional=True` each layer reads the window forwards and backwards; the window holds only past days,
    so nothing leaks from the future.
    """

    def __init__(self, cell: Literal["lstm", "gru"] = "lstm", hidden_size: int = 50, num_layers: int = 4,
                 dropout: float = 0.2, bidirectional: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} is out of range: it must be in [0, 1).")
        if hidden_size < 1 or num_layers < 1:
            raise ConfigError(f"model.hidden_size={hidden_size} and model.num_layers={num_layers} must be >= 1.")
        directions = 2 if bidirectional else 1
        sizes = [self.hparams.n_features] + [hidden_size * directions] * num_layers
        self.layers = nn.ModuleList(self.recurrent_layer(sizes[i]) for i in range(num_layers))
        self.dropout = FastDropout(dropout)
        self.head = nn.Linear(hidden_size * directions, self.output_size)
        init_weights(self, self.hparams.init)

    def recurrent_layer(self, input_size: int) -> nn.Module:
        """One layer, (B, W, input_size) -> ((B, W, directions * hidden), state); a subclass swaps the cell."""
        if self.hparams.cell not in CELLS:
            raise ConfigError(f"model.cell={self.hparams.cell!r} is not one of {sorted(CELLS)}")
        return CELLS[self.hparams.cell](input_size, self.hparams.hidden_size, batch_first=True,
                                        bidirectional=self.hparams.bidirectional)

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):  # (B, W, F) -> (B, W, directions * hidden)
            x = layer(x)[0]
            if k < last:
                x = self.dropout(x)
        if self.hparams.bidirectional:  # final states: forward at the last step, backward at the first
            hidden = self.hparams.hidden_size
            last = torch.cat([x[:, -1, :hidden], x[:, 0, hidden:]], dim=-1)
        else:
            last = x[:, -1]
        return self.head(self.dropout(last))  # (B, output_size), from the final state
