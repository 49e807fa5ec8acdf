"""lstm_zoo: LSTM-family forecasters for price series, on Lightning + Hydra."""

__version__ = "0.1.0"
