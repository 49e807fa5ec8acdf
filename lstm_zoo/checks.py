"""Checks that fail early and clearly: config values no run can use, named with their range and the fix."""

from __future__ import annotations

import math

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lstm_zoo.errors import ConfigError


def check_config(cfg: DictConfig) -> None:
    """Fail at start, before reading data or training, on values no run can use; names the field and the range."""
    def number(key: str) -> float | None:
        value = OmegaConf.select(cfg, key)
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={value!r} is not a number.") from None

    limits = [("data.window", lambda v: v >= 1 and v == int(v), "an integer >= 1"),
              ("data.horizon", lambda v: v >= 1 and v == int(v), "an integer >= 1"),
              ("data.batch_size", lambda v: v >= 1 and v == int(v), "an integer >= 1"),
              ("data.val_fraction", lambda v: 0 <= v < 1, "in [0, 1) (0: no validation set)"),
              ("model.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
              ("model.hidden_size", lambda v: v >= 1 and v == int(v), "an integer >= 1"),
              ("model.num_layers", lambda v: v >= 1 and v == int(v), "an integer >= 1"),
              ("model.num_heads", lambda v: v >= 1 and v == int(v), "an integer >= 1"),
              ("model.optimizer.lr", lambda v: 0 < v < math.inf, "> 0"),
              ("trainer.max_epochs", lambda v: v >= 1 or v == -1, ">= 1 (or -1 for no limit)")]
    for key, ok, allowed in limits:
        value = number(key)
        if value is not None and not ok(value):
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)} is out of range: it must be {allowed}.")
    dates = {}
    for key in ("data.train_end", "data.test_start"):
        if OmegaConf.select(cfg, key) is not None:
            try:
                dates[key] = pd.Timestamp(str(OmegaConf.select(cfg, key)))
            except ValueError:
                raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} is not a date; use YYYY-MM-DD.") from None
    if len(dates) == 2 and dates["data.test_start"] <= dates["data.train_end"]:
        raise ConfigError(f"data.test_start={dates['data.test_start'].date()} must be after data.train_end="
                          f"{dates['data.train_end'].date()}: the test period follows the training period.")
    check_validation_use(cfg)
    check_data_path(cfg)
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(f"trainer.accelerator={accelerator} needs a CUDA GPU, but none is usable here (torch "
                          f"{torch.__version__}, {build}). Fix: trainer=cpu, or install a CUDA build of torch.")
    strategy = OmegaConf.select(cfg, "trainer.strategy")
    name = strategy.get("_target_", "") if isinstance(strategy, DictConfig) else str(strategy or "")
    spawned = isinstance(strategy, DictConfig) and strategy.get("start_method") in ("spawn", "fork", "forkserver")
    if ("ddp" in name.lower() and not spawned and "spawn" not in name and HydraConfig.initialized()
            and HydraConfig.get().mode == RunMode.MULTIRUN):
        raise ConfigError("trainer=ddp cannot run inside a multirun (-m): each DDP process would re-run the whole "
                          "sweep. Fix: trainer.strategy.start_method=spawn, or run the DDP jobs one at a time.")


def check_validation_use(cfg: DictConfig) -> None:
    """`test_checkpoint` is `best` or `last`; without a validation set (data.val_fraction=0) nothing may watch val/*."""
    choice = OmegaConf.select(cfg, "test_checkpoint", default="best")
    if choice not in ("best", "last"):
        raise ConfigError(f"test_checkpoint={choice!r} is not one of ['best', 'last'] (best: the checkpoint with the "
                          "lowest val/loss; last: the weights after the last epoch).")
    if OmegaConf.select(cfg, "data.val_fraction") != 0:
        return
    watchers = [f"callbacks.{name}" for name, node in (cfg.get("callbacks") or {}).items()
                if node is not None and str(node.get("monitor") or "").startswith("val/")]
    if str(OmegaConf.select(cfg, "model.scheduler._target_") or "").endswith("ReduceLROnPlateau"):  # on val/loss
        watchers.append("scheduler")
    if choice == "best":
        watchers.append("test_checkpoint=best")
    if watchers:
        drop = " ".join(f"'~{w}'" for w in watchers if w.startswith("callbacks."))
        raise ConfigError(f"data.val_fraction=0 leaves no validation set, but {', '.join(watchers)} need(s) val/loss. "
                          f"Fix: test_checkpoint=last {drop} scheduler=null (as experiment=tutorial does), or a "
                          "data.val_fraction > 0.".replace("  ", " "))


def check_data_path(cfg: DictConfig) -> None:
    """data=csv (experiment=tutorial too) needs `data.path`; the embedded data configs refuse one, because their split
    dates are the embedded series' (a file read with them would train to 2011 and test 2012 whatever it holds)."""
    data = cfg.get("data")
    if data is None:
        return
    if OmegaConf.is_missing(data, "path"):  # ??? in conf/data/csv.yaml
        raise ConfigError("data.path is not set: data=csv and experiment=tutorial read a CSV file. Fix: data.path="
                          "/path/to/file.csv, e.g. the tutorial's IBM_2006-01-01_to_2018-01-01.csv")
    choice = HydraConfig.get().runtime.choices.get("data") if HydraConfig.initialized() else None
    if data.get("path") is not None and choice in ("ibm", "stocks"):
        raise ConfigError(f"data.path={data.path} is set, but data={choice} is the embedded bokeh_sampledata series, "
                          f"with its split (train to {data.train_end}, test from {data.test_start}). Fix: data=csv "
                          f"data.path={data.path}")
