"""Train and test one forecaster: `python train.py [model=gru] [data=csv data.path=...] [-m sweep ...]`."""

import math

import hydra
from omegaconf import DictConfig

from lstm_zoo.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns validation RMSE, the value a sweeper (e.g. optuna) minimizes: always finite, or the job fails.
    None for a run without a validation set (data.val_fraction=0)."""
    from lstm_zoo.pipeline import run  # Lightning and torch load here: not for --help, nor in a sweep's parent process

    metrics = exit_on_user_error(run, cfg)  # bad data/config/divergence: one line, no traceback, exit 1
    if cfg.data.val_fraction == 0:
        return None
    value = metrics.get("val/rmse", math.nan)
    if not math.isfinite(value):  # optuna 2.10 crashes the whole study on NaN; a failed trial it can skip
        raise FloatingPointError(f"val/rmse is {value}: nothing to optimize.")
    return value


if __name__ == "__main__":
    main()
