"""Forecast past the data: `python predict.py ckpt_path=<.ckpt or run folder> [data=csv data.path=...]`."""

import hydra
from omegaconf import DictConfig

from lstm_zoo.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from lstm_zoo.forecasting import predict  # Lightning and torch load here, not for --help

    exit_on_user_error(predict, cfg)


if __name__ == "__main__":
    main()
