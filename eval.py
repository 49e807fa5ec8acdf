"""Re-score a trained model: `python eval.py ckpt_path=<file.ckpt or run folder> [data=csv data.path=...]`."""

import hydra
from omegaconf import DictConfig

from lstm_zoo.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    from lstm_zoo.pipeline import evaluate  # Lightning and torch load here, not for --help

    return exit_on_user_error(evaluate, cfg).get("test/rmse")


if __name__ == "__main__":
    main()
