"""Attention over an LSTM's hidden states, queried by the last state: which past days the forecast looks at."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from lstm_zoo.errors import ConfigError
from lstm_zoo.models.base import Forecaster
from lstm_zoo.models.init import init_weights


class Attention(nn.Module):
    """Additive (Bahdanau) or scaled dot-product (Luong/Vaswani) attention of one query over a sequence."""

    def __init__(self, hidden_size: int, score: Literal["additive", "dot"] = "dot") -> None:
        super().__init__()
        if score not in ("additive", "dot"):
            raise ConfigError(f"model.score={score!r} is not one of ['additive', 'dot']")
        self.score = score
        if score == "additive":  # v^T tanh(W_k h_t + W_q q)
            self.keys = nn.Linear(hidden_size, hidden_size)
            self.query = nn.Linear(hidden_size, hidden_size, bias=False)
            self.v = nn.Linear(hidden_size, 1, bias=False)

    def forward(self, states: Tensor, query: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """states (B, T, H), query (B, H), mask (B, T) True where attendable -> context (B, H), weights (B, T)."""
        if self.score == "dot":
            scores = (states @ query.unsqueeze(-1)).squeeze(-1) / math.sqrt(states.shape[-1])
        else:
            scores = self.v(torch.tanh(self.keys(states) + self.query(query).unsqueeze(1))).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return (weights.unsqueeze(-1) * states).sum(1), weights


class AttentionForecaster(Forecaster):
    """LSTM over the window, attention over all its hidden states (query: the last one), head on [context, last]."""

    def __init__(self, hidden_size: int = 50, num_layers: int = 2, dropout: float = 0.2,
                 score: Literal["additive", "dot"] = "dot", **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} is out of range: it must be in [0, 1).")
        self.lstm = nn.LSTM(self.hparams.n_features, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.attention = Attention(hidden_size, score)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * hidden_size, self.output_size)
        init_weights(self, self.hparams.init)

    def forward(self, x: Tensor, mask: Tensor | None = None, return_weights: bool = False) -> Tensor | tuple:
        """x (B, W, F) -> (B, output_size), and the attention weights (B, W) with return_weights=True."""
        states, _ = self.lstm(x)  # (B, W, H)
        last = states[:, -1]
        context, weights = self.attention(states, last, mask)
        out = self.head(self.dropout(torch.cat([context, last], dim=-1)))
        return (out, weights) if return_weights else out
