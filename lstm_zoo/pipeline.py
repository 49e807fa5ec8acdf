"""`run(cfg)`: compose the objects a run needs, train, test the best checkpoint, write the run's outputs."""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path

import lightning as L
import pandas as pd
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from lstm_zoo.callbacks import ForecastPlot
from lstm_zoo.checks import check_config, checkpoint_file, keep_best_across_folders, load_checkpoint, user_error
from lstm_zoo.data import StockDataModule
from lstm_zoo.models import Forecaster

log = logging.getLogger(__name__)


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
        ckpt_path = checkpoint_file(cfg.ckpt_path)
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
