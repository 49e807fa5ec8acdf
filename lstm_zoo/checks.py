"""Checks that fail early and clearly: config ranges, and checkpoints to resume from."""

from __future__ import annotations

import json
import math
import pickle
import warnings
import zipfile
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lstm_zoo.errors import CheckpointError, ConfigError


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


def checkpoint_file(path: str | None) -> str | None:
    """The checkpoint eval/predict/export use: a file, or a run folder's published weights, or 'last' (this run's).

    A run folder means the weights whose test metrics the run published: the best checkpoint its metrics.json names
    when it tested that one (`tested_weights: best`), else its checkpoints/last.ckpt. (Resuming a run folder is
    `lstm_zoo.lifecycle`'s business: it always continues from the newest complete checkpoint.)
    """
    if path is None or str(path) == "last":
        return path
    given = Path(str(path)).expanduser()
    file = published_weights(given) if given.is_dir() else given
    if not file.is_file():
        raise CheckpointError(f"ckpt_path: no checkpoint at {file}. Fix: pass a .ckpt file or a run folder "
                              "holding checkpoints/last.ckpt, e.g. ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt.")
    return str(file)


def published_weights(folder: Path) -> Path:
    """The checkpoint of a run folder whose weights its published test metrics describe (see `checkpoint_file`)."""
    try:
        record = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        record = {}
    best = record.get("best_checkpoint") if isinstance(record, dict) and record.get("tested_weights") == "best" \
        else None
    if best:  # the recorded path, or the same file name in this folder (a run folder moved or copied elsewhere)
        candidates = [folder / "checkpoints" / Path(best).name, Path(best)]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise CheckpointError(f"ckpt_path={folder}: its metrics.json says the run tested {best}, which is gone. "
                                  "Fix: pass another checkpoint file, e.g. ckpt_path="
                                  f"{folder / 'checkpoints' / 'last.ckpt'} (the weights after the last epoch).")
        return found
    return next((p for p in (folder / "checkpoints" / "last.ckpt", folder / "last.ckpt") if p.is_file()),
                folder / "checkpoints" / "last.ckpt")


def load_checkpoint(path: str | Path) -> dict:
    """Load a Lightning checkpoint with `weights_only=True`: tensors and plain values only, so no code can run."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a checkpoint (expected a .ckpt file written by this project, a zip "
                              "archive; the file may be truncated or something else). Fix: pass another ckpt_path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # the pickle itself is damaged
            unsafe = []
        if unsafe:
            raise CheckpointError(f"{path}: refused to load: it holds Python objects beyond tensors and plain "
                                  f"values ({', '.join(unsafe)}), which could run code. Fix: use a checkpoint "
                                  "written by this project.") from None
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint (its saved objects do not decode). Fix: "
                              "use another checkpoint, e.g. the run's other .ckpt file.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({str(err).splitlines()[0]}). Fix: use "
                              "another checkpoint, e.g. the run's other .ckpt file.") from None


def newest_complete_checkpoint(folder: Path, quarantine: bool = True) -> tuple[Path, dict] | None:
    """The newest `*.ckpt` in `folder` that loads as a training checkpoint, and its contents; None if there is none.

    A newer torn or unreadable one is skipped with a warning and, with `quarantine`, renamed `<name>.torn` so that
    it is never picked again (nor overwritten unseen: it stays for inspection).
    """
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"),
                        reverse=True)
    for path in candidates:
        try:
            checkpoint = load_checkpoint(path)
            if not isinstance(checkpoint, dict) or not {"state_dict", "loops", "epoch"} <= checkpoint.keys():
                raise CheckpointError(f"{path}: not a training checkpoint (no state_dict, loops and epoch)")
        except CheckpointError as err:
            renamed = path.with_name(path.name + ".torn") if quarantine else None
            warnings.warn(f"skipping a torn or unreadable checkpoint in favour of an older complete one"
                          f"{f' (renamed {renamed.name})' if renamed else ''}: {err}", stacklevel=2)
            if renamed:
                path.replace(renamed)
            continue
        return path, checkpoint
    return None


def keep_best_across_folders(trainer: L.Trainer, checkpoint: dict) -> None:
    """Resuming into a new run folder: keep the old run's best score, which Lightning drops when the folder changes.

    Without it the first epoch after resuming becomes "best" whatever its loss. Files of the old run are never
    deleted (ModelCheckpoint only removes files in its own folder).
    """
    for callback in trainer.checkpoint_callbacks:
        state = checkpoint.get("callbacks", {}).get(callback.state_key)
        if state and state.get("dirpath") != callback.dirpath:
            callback.best_model_score = state["best_model_score"]
            callback.best_k_models = state.get("best_k_models", {})
            callback.kth_best_model_path, callback.kth_value = state["kth_best_model_path"], state["kth_value"]
