"""lstm_zoo: LSTM-family forecasters for price series, on Lightning + Hydra."""

from lstm_zoo.naming import register_resolvers

__version__ = "0.1.0"
register_resolvers()  # before any entry point composes conf/hydra/default.yaml
