"""lstm_zoo's Hydra launchers (Hydra loads plugins only from the `hydra_plugins` namespace package)."""
