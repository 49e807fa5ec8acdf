"""The model zoo: every variant is a thin subclass of `Forecaster`."""

from lstm_zoo.models.attention import Attention, AttentionForecaster
from lstm_zoo.models.base import Forecaster
from lstm_zoo.models.baselines import (
    ARIMAForecaster,
    DLinearForecaster,
    DriftForecaster,
    ETSForecaster,
    MeanForecaster,
    RidgeForecaster,
)
from lstm_zoo.models.cnn_lstm import CNNLSTMForecaster
from lstm_zoo.models.fitted import FittedForecaster
from lstm_zoo.models.gru import FusedGRU
from lstm_zoo.models.min_rnn import MinGRU, MinLSTM, MinRNN, MinRNNForecaster
from lstm_zoo.models.peephole import PeepholeForecaster, PeepholeLSTM
from lstm_zoo.models.rnn import RNNForecaster
from lstm_zoo.models.seq2seq import EncoderDecoderForecaster
from lstm_zoo.models.slstm import SLSTM, SLSTMForecaster

__all__ = ["ARIMAForecaster", "Attention", "AttentionForecaster", "CNNLSTMForecaster", "DLinearForecaster",
           "DriftForecaster", "ETSForecaster", "EncoderDecoderForecaster", "FittedForecaster", "Forecaster",
           "FusedGRU", "MeanForecaster", "MinGRU", "MinLSTM", "MinRNN", "MinRNNForecaster", "PeepholeForecaster",
           "PeepholeLSTM", "RidgeForecaster", "RNNForecaster", "SLSTM", "SLSTMForecaster"]
