"""Train and test one forecaster: `python train.py [model=gru] [data=csv data.path=...] [-m sweep ...]`."""

import logging
import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lstm_zoo.checks import user_error
from lstm_zoo.pipeline import run
from lstm_zoo.records import remove_empty_run_folder

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns validation RMSE, the value a sweeper (e.g. optuna) minimizes: always finite, or the job fails.
    None for a run without a validation set (data.val_fraction=0)."""
    try:
        metrics = run(cfg)
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        log.error("%s: %s", type(cause).__name__, cause)  # bad data/config/divergence: one line, no traceback
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise cause.with_traceback(None) from None  # the sweep runs its other jobs, then exits 1
        remove_empty_run_folder(Path(HydraConfig.get().runtime.output_dir))  # a run normally leaves its record
        sys.exit(1)
    if cfg.data.val_fraction == 0:
        return None
    value = metrics.get("val/rmse", math.nan)
    if not math.isfinite(value):  # optuna 2.10 crashes the whole study on NaN; a failed trial it can skip
        raise FloatingPointError(f"val/rmse is {value}: nothing to optimize.")
    return value


if __name__ == "__main__":
    main()
