"""Export a trained model: `python export.py ckpt_path=<.ckpt or run folder> format=onnx|torchscript`."""

import hydra
from omegaconf import DictConfig

from lstm_zoo.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from lstm_zoo.export import export  # Lightning and torch load here, not for --help

    exit_on_user_error(export, cfg)


if __name__ == "__main__":
    main()
