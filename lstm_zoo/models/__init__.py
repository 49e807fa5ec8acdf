"""The model zoo: every variant is a thin subclass of `Forecaster`."""

from lstm_zoo.models.base import Forecaster
from lstm_zoo.models.rnn import RNNForecaster

__all__ = ["Forecaster", "RNNForecaster"]
