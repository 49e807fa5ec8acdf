"""lstm_zoo: LSTM-family forecasters for price series, on Lightning + Hydra."""

import warnings

from lstm_zoo.naming import register_resolvers

__version__ = "0.1.0"
register_resolvers()  # before any entry point composes conf/hydra/default.yaml

# conf/hydra/launcher/joblib.yaml (lstm_zoo's joblib launcher) shares its name with the stock plugin's ConfigStore
# node, which Hydra 1.3 merges in as a schema with a deprecation warning at every composition: in the sweep process
# and once per job, which nobody can act on. Renaming the file would rename `hydra/launcher=joblib`, and a node stored
# over the stock one is re-stored by Hydra's plugin scan. Sweep and workers import this package before composing.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/joblib' is validated against ConfigStore schema")
