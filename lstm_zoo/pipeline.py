"""`run(cfg)`: compose the objects a run needs, train, test the best checkpoint, write the run's outputs."""

from __future__ import annotations

import json
import logging
import math
import pickle
import time
import warnings
import zipfile
from pathlib import Path

import lightning as L
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf

from lstm_zoo.callbacks import ForecastPlot
from lstm_zoo.data import DataError, StockDataModule
from lstm_zoo.models import Forecaster

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value out of range, or impossible on this machine, worded for the user."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or unsafe to load, worded for the user."""


# errors whose message is the whole story: train.py prints one line for them instead of a traceback
USER_ERRORS = (DataError, ConfigError, CheckpointError, FloatingPointError, MisconfigurationException)


def user_error(err: BaseException | None) -> BaseException | None:
    """The user-facing error behind `err`, also when Hydra's instantiate wrapped it in an InstantiationException."""
    while err is not None and not isinstance(err, USER_ERRORS):
        err = err.__cause__
    return err


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
              ("data.val_fraction", lambda v: 0 < v < 1, "in (0, 1)"),
              ("model.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
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


def checkpoint_file(path: str | None, out: Path) -> str | None:
    """The checkpoint to resume from: a file, a run folder (its checkpoints/last.ckpt) or 'last' (this run's)."""
    if path is None or str(path) == "last":
        return path
    given = Path(str(path)).expanduser()
    file = next((p for p in (given / "checkpoints" / "last.ckpt", given / "last.ckpt") if p.is_file()), given) \
        if given.is_dir() else given
    if not file.is_file():
        raise CheckpointError(f"ckpt_path: no checkpoint at {file}. Fix: pass a .ckpt file or a run folder "
                              "holding checkpoints/last.ckpt, e.g. ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt.")
    return str(file)


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


def single_device_test(trainer: L.Trainer, model: Forecaster, datamodule: StockDataModule) -> dict[str, float]:
    """Test the best checkpoint in this process on one device: under DDP each rank sees only part of the test set."""
    plots = [c for c in trainer.callbacks if isinstance(c, ForecastPlot)]
    tester = L.Trainer(accelerator=trainer.accelerator, devices=1, logger=trainer.logger, callbacks=plots,
                       default_root_dir=trainer.default_root_dir, enable_progress_bar=False,
                       enable_model_summary=False)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
    with warnings.catch_warnings():  # the process group is still up, but this test runs on rank 0 alone
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
        tester.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
    return {k: float(v) for k, v in tester.callback_metrics.items() if k.startswith("test/")}


def route_lightning_logs_to_hydra() -> None:
    """Lightning's own handlers do not propagate, so its lines would miss Hydra's log file."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)
    # lightning 2.6 calls a torch pytree API that torch 2.13 deprecates; nothing for users to act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def predictions_frame(datamodule: StockDataModule, results: dict) -> pd.DataFrame:
    """One row per test window: its first target date, the actual value(s), the model's and persistence's."""
    actual, pred = results["actual"].cpu().numpy(), results["pred"].cpu().numpy()
    frame = pd.DataFrame({"date": datamodule.test_dates[: len(actual)].date, "actual": actual[:, 0],
                          "predicted": pred[:, 0], "persistence": results["persistence"][:, 0].cpu().numpy()})
    for step in range(1, actual.shape[1]):
        frame[f"actual_t+{step + 1}"] = actual[:, step]
        frame[f"predicted_t+{step + 1}"] = pred[:, step]
    return frame


def write_json(path: Path, payload: dict) -> None:
    """JSON with NaN written as null (undefined), never as an invalid NaN token."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in payload.items()}
    path.write_text(json.dumps(clean, indent=2, default=str) + "\n")


def print_summary(metrics: dict) -> None:
    rows = [("model", "test/"), ("persistence", "test/persistence_")]
    lines = [f"{'':<12} {'RMSE':>9} {'MAE':>9} {'MAPE %':>9}"]
    for name, prefix in rows:
        values = [metrics.get(prefix + k) for k in ("rmse", "mae", "mape")]
        lines.append(f"{name:<12} " + " ".join(f"{v:>9.3f}" if v is not None and math.isfinite(v) else f"{'n/a':>9}"
                                              for v in values))
    print("\nTest period, in price units:\n" + "\n".join(lines))


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and test one configuration; returns the final metrics (also written to metrics.json)."""
    route_lightning_logs_to_hydra()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"status": "running"}
    try:
        check_config(cfg)
        ckpt_path = checkpoint_file(cfg.ckpt_path, out)
        resume = load_checkpoint(ckpt_path) if ckpt_path not in (None, "last") else None
        L.seed_everything(cfg.seed, workers=True)
        datamodule: StockDataModule = instantiate(cfg.data)
        model: Forecaster = instantiate(cfg.model, n_features=datamodule.n_features, horizon=datamodule.horizon,
                                        window=datamodule.window, _convert_="all")
        callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
        logger = instantiate(cfg.logger)
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
        params = OmegaConf.to_container(cfg, resolve=True)
        params.update(model_class=type(model).__name__, num_parameters=model.num_parameters)
        logger.log_hyperparams(params, metrics={"hp/val_rmse": math.nan, "hp/test_rmse": math.nan})
        if resume is not None:
            keep_best_across_folders(trainer, resume)

        started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics.update(train_seconds=time.perf_counter() - started, epochs=trainer.current_epoch)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        if not math.isfinite(metrics.get("val/loss", 0.0)):
            raise FloatingPointError(f"validation loss is {metrics['val/loss']} after epoch {trainer.current_epoch}: "
                                     "the run diverged. Fix: a smaller optimizer.lr, or trainer.gradient_clip_val=1.0.")
        if cfg.test and trainer.world_size > 1:
            if not trainer.is_global_zero:  # rank 0 tests on the whole test set and writes the run's files
                return metrics
            metrics.update(single_device_test(trainer, model, datamodule))
        elif cfg.test:
            trainer.test(model, datamodule=datamodule, ckpt_path="best" if trainer.checkpoint_callback else None,
                         weights_only=True)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        if cfg.test and trainer.is_global_zero:
            predictions_frame(datamodule, model.test_results).to_csv(out / "predictions.csv", index=False)
        metrics.update(status="completed", model=type(model).__name__, num_parameters=model.num_parameters,
                       best_checkpoint=trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback
                       else None)
        logger.log_metrics({"hp/val_rmse": metrics.get("val/rmse", math.nan),
                            "hp/test_rmse": metrics.get("test/rmse", math.nan)}, step=trainer.global_step)
        if trainer.is_global_zero and cfg.test:
            print_summary(metrics)
        return metrics
    except SIGTERMException as err:  # a SystemExit with no code: it would exit 0 and hide the interruption
        metrics.update(status="interrupted", error="SIGTERM")
        raise SystemExit(143) from err
    except BaseException as err:
        cause = user_error(err) or err
        metrics.update(status="interrupted" if isinstance(err, KeyboardInterrupt | SystemExit) else "failed",
                       error=f"{type(cause).__name__}: {cause}")
        raise
    finally:
        if rank_zero_only.rank == 0:  # under DDP every rank runs this task in the same folder
            write_json(out / "metrics.json", metrics)
