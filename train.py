"""Train and test one forecaster: `python train.py [model=gru] [data=csv data.path=...] [-m sweep ...]`."""

import hydra
from omegaconf import DictConfig

from lstm_zoo.pipeline import run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns validation RMSE, the value a sweeper (e.g. optuna) minimizes."""
    return run(cfg).get("val/rmse")


if __name__ == "__main__":
    main()
