"""Shared fixtures: a small synthetic price CSV in the tutorial's format, and composed Hydra configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FAST = ["trainer.max_epochs=1", "data.window=10", "model.hidden_size=8",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def recurrent_models() -> list[str]:
    """conf/model names of the recurrent zoo: every model config but the baselines (lstm_zoo.models.baselines)."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    configs = {p.stem: OmegaConf.load(p) for p in (CONF / "model").glob("*.yaml")}
    return sorted(name for name, cfg in configs.items()  # without _target_: an alias (lstm = stacked)
                  if "_target_" in cfg and get_class(cfg._target_).__module__ != "lstm_zoo.models.baselines")


def write_prices_csv(path: Path, start: str = "2020-01-01", end: str = "2022-12-31", seed: int = 0,
                     dirty: bool = False, name: str = "IBM") -> Path:
    """Business-day OHLCV random walk in the tutorial's format (Date,Open,High,Low,Close,Volume,Name).

    With dirty=True it also carries the tutorial file's defects: empty Open/Low cells on one day and a
    trailing `-1,,,,,,` line.
    """
    dates = pd.bdate_range(start, end)
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 1, len(dates)))
    frame = pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "Open": close + rng.normal(0, 0.3, len(dates)),
                          "High": close + 1 + rng.random(len(dates)), "Low": close - 1 - rng.random(len(dates)),
                          "Close": close, "Volume": rng.integers(1_000_000, 5_000_000, len(dates)), "Name": name})
    frame = frame.round(2).astype({"Open": object, "Low": object})
    if dirty:
        frame.loc[len(frame) // 2, ["Open", "Low"]] = ""
    frame.to_csv(path, index=False)
    if dirty:
        with path.open("a") as f:
            f.write("-1,,,,,,\n")
    return path


def write_tickers_csv(path: Path, levels: dict[str, float] | None = None, start: str = "2015-01-01",
                      end: str = "2022-12-31", seed: int = 0) -> Path:
    """Several tickers in one file (the layout of the tutorial's all_stocks CSV): geometric random walks whose price
    levels differ as much as real stocks do (default AAA near 500, BBB near 25), on the same business days."""
    dates = pd.bdate_range(start, end)
    rng = np.random.default_rng(seed)
    frames = []
    for name, level in (levels or {"AAA": 500.0, "BBB": 25.0}).items():
        close = level * np.exp(np.cumsum(rng.normal(0, 0.015, len(dates))))
        frames.append(pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "Open": close * (1 + rng.normal(0, 0.003,
                                    len(dates))), "High": close * (1.01 + 0.01 * rng.random(len(dates))),
                                    "Low": close * (0.99 - 0.01 * rng.random(len(dates))), "Close": close,
                                    "Volume": rng.integers(1_000_000, 5_000_000, len(dates)), "Name": name}))
    pd.concat(frames).round(4).to_csv(path, index=False)
    return path


@pytest.fixture
def prices_csv(tmp_path: Path) -> Path:
    """Three years of clean synthetic prices: train 2020-2021, test 2022 by default."""
    return write_prices_csv(tmp_path / "prices.csv")


def compose_train(overrides: list[str] | None = None, output_dir: Path | None = None) -> DictConfig:
    """`conf/train.yaml` composed as `python train.py <overrides>` would, with outputs in `output_dir`."""
    extra = [f"output_dir={output_dir}"] if output_dir is not None else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*(overrides or []), *extra])


def compose_entry(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """conf/<name>.yaml (eval, predict, export) composed as its entry point would, with outputs in `output_dir`."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=[*overrides, f"output_dir={output_dir}"])


@pytest.fixture
def fast_cfg(tmp_path: Path, prices_csv: Path):
    """Factory: a tiny, fast run on the synthetic CSV, plus any extra overrides."""

    def make(*overrides: str) -> DictConfig:
        return compose_train(["data=csv", f"data.path={prices_csv}", *FAST, *overrides], tmp_path / "run")

    return make
