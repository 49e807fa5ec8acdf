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
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from lstm_zoo.data import StockDataModule
from lstm_zoo.models import Forecaster

log = logging.getLogger(__name__)


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
    """Model and persistence side by side; skill and the Diebold-Mariano test say whether the model is better."""
    def cell(value: float | None, width: int = 9) -> str:
        return f"{value:>{width}.3f}" if value is not None and math.isfinite(value) else f"{'n/a':>{width}}"

    keys = ("rmse", "mae", "mape", "skill", "directional_accuracy", "dm_stat", "dm_pvalue")
    lines = [f"{'':<12} {'RMSE':>9} {'MAE':>9} {'MAPE %':>9} {'skill':>9} {'dir.acc':>9} {'DM stat':>9} {'DM p':>9}"]
    lines.append(f"{'model':<12} " + " ".join(cell(metrics.get("test/" + k)) for k in keys))
    persistence = [metrics.get("test/persistence_" + k) for k in keys[:3]] + [0.0]
    lines.append(f"{'persistence':<12} " + " ".join(cell(v) for v in persistence))
    skill, pvalue = metrics.get("test/skill"), metrics.get("test/dm_pvalue")
    if skill is not None and pvalue is not None:
        verdict = "beats" if skill > 0 else "does not beat"
        lines.append(f"The model {verdict} persistence ('tomorrow = today') on RMSE (skill {skill:+.3f}); "
                     f"Diebold-Mariano p = {pvalue:.3g} ({'significant' if pvalue < 0.05 else 'not significant'} "
                     "at 5%).")
    print("\nTest period, in price units:\n" + "\n".join(lines))


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and test one configuration; returns the final metrics (also written to metrics.json)."""
    route_lightning_logs_to_hydra()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"status": "running"}
    try:
        L.seed_everything(cfg.seed, workers=True)
        datamodule: StockDataModule = instantiate(cfg.data)
        model: Forecaster = instantiate(cfg.model, n_features=datamodule.n_features, horizon=datamodule.horizon,
                                        window=datamodule.window, _convert_="all")
        callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
        logger = instantiate(cfg.logger)
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
        params = OmegaConf.to_container(cfg, resolve=True)
        params.update(model_class=type(model).__name__, num_parameters=model.num_parameters)
        logger.log_hyperparams(params, metrics={"hp/val_rmse": math.nan, "hp/test_rmse": math.nan,
                                                "hp/test_skill": math.nan})

        started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics.update(train_seconds=time.perf_counter() - started, epochs=trainer.current_epoch)
        if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path:
            # val/* of the checkpoint that is tested, not of the last epoch: what configurations are chosen on
            trainer.validate(model, datamodule=datamodule, ckpt_path="best", verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        if cfg.test:
            trainer.test(model, datamodule=datamodule, ckpt_path="best" if trainer.checkpoint_callback else None)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
            if trainer.is_global_zero:
                predictions_frame(datamodule, model.test_results).to_csv(out / "predictions.csv", index=False)
        metrics.update(status="completed", model=type(model).__name__, num_parameters=model.num_parameters,
                       best_checkpoint=trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback
                       else None)
        logger.log_metrics({"hp/val_rmse": metrics.get("val/rmse", math.nan),
                            "hp/test_rmse": metrics.get("test/rmse", math.nan),
                            "hp/test_skill": metrics.get("test/skill", math.nan)}, step=trainer.global_step)
        if trainer.is_global_zero and cfg.test:
            print_summary(metrics)
        return metrics
    except SIGTERMException as err:  # a SystemExit with no code: it would exit 0 and hide the interruption
        metrics.update(status="interrupted", error="SIGTERM")
        raise SystemExit(143) from err
    except BaseException as err:
        metrics.update(status="interrupted" if isinstance(err, KeyboardInterrupt | SystemExit) else "failed",
                       error=f"{type(err).__name__}: {err}")
        raise
    finally:
        write_json(out / "metrics.json", metrics)
