"""`run(cfg)` trains and tests one configuration in its run folder; `evaluate(cfg)` tests a checkpoint."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from lstm_zoo.build import build, build_trainer, route_lightning_logs_to_hydra, single_device_tester
from lstm_zoo.callbacks import ForecastPlot
from lstm_zoo.checkpoints import best_checkpoint, data_for_checkpoint, keep_best_across_folders, load_forecaster
from lstm_zoo.data import StockDataModule
from lstm_zoo.errors import ConfigError, user_error
from lstm_zoo.evaluation.intervals import NO_INTERVALS
from lstm_zoo.evaluation.metrics import score
from lstm_zoo.evaluation.pooling import ticker_metrics
from lstm_zoo.evaluation.predictions import predictions_frame
from lstm_zoo.evaluation.report import experiment_hparams, log_experiment, print_summary
from lstm_zoo.lifecycle import Plan, plan_run, record_hydra_files, resume_command
from lstm_zoo.models import FittedForecaster, Forecaster
from lstm_zoo.records import RunRecord, code_version, read_record, write_json
from lstm_zoo.refit import refit_checkpoint, refit_fold
from lstm_zoo.timing import EpochTimer, Stopwatch, describe, process_age

log = logging.getLogger(__name__)


def test_and_write(trainer: L.Trainer, model: Forecaster, datamodule: StockDataModule, out: Path,
                   ckpt_path: str | None = None, clock: Stopwatch | None = None) -> dict[str, float]:
    """Test `model` (with the weights of `ckpt_path` if given), write predictions.csv; returns the test/ metrics."""
    with warnings.catch_warnings():  # under DDP the process group is still up while rank 0 tests alone
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
        # verbose=False: Lightning's table shows float32 values (a tiny p-value as 0.0); print_summary follows
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True, verbose=False)
    if clock is not None:
        clock.lap("test")
    # float64 from the predictions, not Lightning's float32 callback_metrics (tiny p-values would become 0)
    predictions, intervals, method = predictions_frame(model.test_forecasts, datamodule.test_dates, datamodule.tickers)
    metrics = {"test/loss": float(trainer.callback_metrics["test/loss"]),
               **{f"test/{k}": v for k, v in {**score(predictions), **intervals}.items()}, "intervals": method}
    for logger in trainer.loggers:  # TensorBoard's test scalars (float32 there)
        logger.log_metrics({k: v for k, v in metrics.items() if k != "intervals"}, step=trainer.global_step)
    if trainer.is_global_zero:
        predictions.to_csv(out / "predictions.csv", index=False)
        for plot in (c for c in trainer.callbacks if isinstance(c, ForecastPlot)):
            plot.draw(predictions, trainer, type(model).__name__, datamodule.target)
        if len(datamodule.tickers) > 1:
            metrics.update(ticker_metrics(predictions))
    return metrics


def split_info(datamodule: StockDataModule) -> dict:
    """The run's tickers and date ranges for metrics.json; the fold when it is one of a walk-forward backtest."""
    period, test = datamodule.period, datamodule.windows["test"]
    info = {"tickers": datamodule.tickers, "train_start": str(period.train_start.date()) if period.train_start
            else None, "train_end": str(period.train_end.date()), "test_start": str(test["date"].min().date()),
            "test_end": str(test["date"].max().date())}
    if datamodule.backtest is not None:
        info.update(fold=datamodule.backtest.fold, n_folds=datamodule.backtest.n_folds)
    return info


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and test one configuration; returns the final metrics (also written to metrics.json).

    Re-running is resuming: the run folder decides how the run starts (`lstm_zoo.lifecycle.plan_run`), and
    metrics.json says `running` (with a heartbeat) until it says `completed`, `failed` or `interrupted`.
    """
    clock = Stopwatch(startup=process_age())
    route_lightning_logs_to_hydra()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank_zero = rank_zero_only.rank == 0  # under DDP every rank runs this task in the same folder
    try:
        plan = plan_run(cfg, out, rank_zero)
    except BaseException as err:
        if rank_zero and read_record(out) is None:  # never write over the record of the run the folder holds
            cause = user_error(err) or err
            write_json(out / "metrics.json", {"status": "failed", "error": f"{type(cause).__name__}: {cause}",
                                              "code": code_version()})
        raise
    if plan.completed is not None:
        return recorded_results(plan, out, rank_zero)
    if rank_zero:
        record_hydra_files(out, cfg)
        if HydraConfig.initialized() and HydraConfig.get().mode != RunMode.MULTIRUN:  # a sweep prints its folder
            log.info("Run folder %s; if this run is stopped or killed, this command resumes it: %s", out,
                     resume_command(out))
    record = RunRecord(out, plan.config_id, plan.ckpt_path, write=rank_zero)
    metrics: dict = {"status": "running"}
    try:
        train_and_test(cfg, out, plan, metrics, clock)
        record.finish("completed", metrics)
        return metrics
    except SIGTERMException as err:  # a SystemExit with no code: it would exit 0 and hide the interruption
        record.finish("interrupted", metrics, error="SIGTERM")
        say_how_to_resume(out, "SIGTERM", rank_zero)
        raise SystemExit(143) from err
    except BaseException as err:
        # Ctrl-C: Lightning's fit turns it into SystemExit(1); elsewhere (data loading, testing) it arrives as is
        ctrl_c = isinstance(err, KeyboardInterrupt) or isinstance(err.__context__, KeyboardInterrupt)
        if ctrl_c or isinstance(err, SystemExit):
            why = "Ctrl-C (SIGINT)" if ctrl_c else f"SystemExit({err.code})"
            record.finish("interrupted", metrics, error=why)
            say_how_to_resume(out, why, rank_zero)
            if isinstance(err, KeyboardInterrupt):
                raise SystemExit(1) from None  # as Lightning exits on Ctrl-C: status 1, no traceback
            raise
        cause = user_error(err) or err
        record.finish("failed", metrics, error=f"{type(cause).__name__}: {cause}")
        raise


def say_how_to_resume(out: Path, why: str, rank_zero: bool) -> None:
    """One line after an interruption: what was kept and the exact command that resumes the run."""
    if not rank_zero:
        return
    found = sorted((out / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    kept = f"checkpoints/{found[-1].name} holds its last finished epoch" if found else "no epoch had finished"
    log.warning("Interrupted by %s: %s. Resume it with: %s", why, kept, resume_command(out))


def recorded_results(plan: Plan, out: Path, rank_zero: bool) -> dict[str, float]:
    """A completed run's metrics as recorded (NaN where it recorded null); copied here when from another folder."""
    metrics = {k: (math.nan if v is None and "/" in k else v) for k, v in plan.completed.items()}
    if rank_zero and "results_from" in metrics:
        write_json(out / "metrics.json", {**metrics, "config_id": plan.config_id})
    if rank_zero and metrics.get("test/rmse") is not None:
        print_summary(metrics)
    return metrics


def train_and_test(cfg: DictConfig, out: Path, plan: Plan, metrics: dict, clock: Stopwatch) -> None:
    """Build the run's objects, train (resuming `plan.ckpt_path`), test `cfg.test_checkpoint`; fills `metrics`,
    with where the time went under `timing` (`lstm_zoo.timing`)."""
    datamodule, model, trainer = build(cfg, purge_step=plan.purge_step)
    epoch_timer = next(c for c in trainer.callbacks if isinstance(c, EpochTimer))  # the config's EpochLog, or build's
    logger = trainer.logger
    log_experiment(logger, experiment_hparams(cfg, model))
    if isinstance(model, FittedForecaster):  # fit without Lightning epochs
        fit_and_test(cfg, model, datamodule, trainer, out, metrics, clock)
        return
    if plan.checkpoint is not None:
        keep_best_across_folders(trainer, plan.checkpoint)

    started = clock.lap("build")
    reused = refit_checkpoint(cfg, out) if plan.ckpt_path is None else None  # backtest.refit_every > 1
    if reused is None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*exists and is not empty")  # resuming in its own folder
            trainer.fit(model, datamodule=datamodule, ckpt_path=plan.ckpt_path, weights_only=True)
    else:
        log.info("backtest.refit_every=%d: fold %d forecasts with the model of fold %d's completed job, %s (no "
                 "training).", cfg.backtest.refit_every, cfg.backtest.fold, refit_fold(cfg), reused)
        datamodule.setup("fit")
        metrics.update(refit_from=str(reused))
    metrics.update(train_seconds=clock.lap("fit_other") - started, epochs=trainer.current_epoch,
                   optimizer_steps=trainer.global_step,
                   windows={stage: len(dataset) for stage, dataset in datamodule.datasets.items()})
    clock.split_fit(started, epoch_timer)
    validated = cfg.data.val_fraction > 0
    last_val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if validated and reused is None and not all(math.isfinite(last_val.get(k, 0.0)) for k in ("val/loss", "val/rmse")):
        raise FloatingPointError(f"validation loss is {last_val.get('val/loss')} after epoch "
                                 f"{trainer.current_epoch}: the run diverged. Fix: a smaller optimizer.lr, or "
                                 "trainer.gradient_clip_val=1.0.")  # sweepers can't rank NaN
    ranking = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)  # not last.ckpt's writer
    best = str(reused) if reused else best_checkpoint(ranking) if ranking else ""
    tested = best if cfg.test_checkpoint == "best" and best else None  # None: the final weights, in memory
    distributed = trainer.world_size > 1
    # ddp_spawn: this (parent) process is outside the process group, and validating through `trainer` would spawn
    # the processes once more (which aborted at times): one device re-scores here instead
    in_group = torch.distributed.is_available() and torch.distributed.is_initialized()
    validator = single_device_tester(trainer) if distributed and not in_group else trainer
    if tested:  # the best epoch's validation metrics (a sweeper's objective), not the last epoch's
        loggers, validator.loggers = validator.loggers, []  # a re-scoring, not a new point on the curves
        validator.validate(model, datamodule=datamodule, ckpt_path=tested, verbose=False, weights_only=True)
        validator.loggers = loggers
    scored = validator.callback_metrics if tested else trainer.callback_metrics
    metrics.update({k: float(v) for k, v in scored.items() if k.startswith("val/")})
    metrics.update(tested_weights="best" if tested else "last")  # the weights test/* describe
    clock.lap("best_validation")
    if distributed and not trainer.is_global_zero:  # rank 0 tests on the whole test set and writes the run's files
        return
    if cfg.test:
        tester = single_device_tester(trainer) if distributed else trainer
        metrics.update(test_and_write(tester, model, datamodule, out, ckpt_path=tested, clock=clock))
    metrics.update(split_info(datamodule))
    metrics.update(model=type(model).__name__, num_parameters=model.num_parameters, best_checkpoint=best or None)
    logger.log_metrics({"hp/val_rmse": metrics.get("val/rmse", math.nan),
                        "hp/test_rmse": metrics.get("test/rmse", math.nan),
                        "hp/test_skill": metrics.get("test/skill", math.nan)}, step=trainer.global_step)
    if trainer.is_global_zero and cfg.test:
        print_summary(metrics)
    clock.lap("write")
    metrics["timing"] = clock.record(epoch_timer)
    log.info(describe(metrics["timing"]))


def fit_and_test(cfg: DictConfig, model: FittedForecaster, datamodule: StockDataModule, trainer: L.Trainer,
                 out: Path, metrics: dict, clock: Stopwatch) -> None:
    """A model fit in one pass (lstm_zoo.models.fitted): `model.fit` on the training windows instead of
    `trainer.fit`, its fitted values saved as checkpoints/last.ckpt, then validated and tested like any model."""
    if trainer.world_size > 1:
        raise ConfigError(f"{type(model).__name__} is fit in one pass on one process, not by a distributed trainer. "
                          "Fix: trainer.devices=1 trainer.strategy=auto.")
    started = clock.lap("build")
    datamodule.setup("fit")
    clock.lap("data")
    model.fit(datamodule)
    checkpoint = out / "checkpoints" / "last.ckpt"
    model.save_fitted(checkpoint, datamodule.state_dict())
    metrics.update(train_seconds=clock.lap("train") - started, epochs=0, optimizer_steps=0,
                   windows={stage: len(dataset) for stage, dataset in datamodule.datasets.items()})
    if len(datamodule.datasets["val"]):  # val/loss and val/rmse, as sweepers and leaderboards read them
        with warnings.catch_warnings():  # a model without trainable parameters: nothing to warn about
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            trainer.validate(model, datamodule=datamodule, verbose=False)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    clock.lap("validation")
    metrics.update(tested_weights="fitted")
    if cfg.test:
        metrics.update(test_and_write(trainer, model, datamodule, out, clock=clock))
    metrics.update(split_info(datamodule))
    metrics.update(model=type(model).__name__, num_parameters=model.num_parameters, best_checkpoint=str(checkpoint))
    if trainer.logger is not None:
        trainer.logger.log_metrics({f"hp/{k.replace('/', '_')}": metrics.get(k, math.nan)
                                    for k in ("val/rmse", "test/rmse", "test/skill")}, step=0)
    if cfg.test:
        print_summary(metrics)
    clock.lap("write")
    metrics["timing"] = clock.record()
    log.info(describe(metrics["timing"]))


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test a checkpoint on `cfg.data`'s test period with the scaling and window it was trained with."""
    route_lightning_logs_to_hydra()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"status": "running", "ckpt_path": str(cfg.ckpt_path)}
    try:
        L.seed_everything(cfg.seed, workers=True)
        model, data_state = load_forecaster(cfg.ckpt_path, interval_levels=list(cfg.interval_levels))
        datamodule = data_for_checkpoint(cfg.data, data_state, str(cfg.ckpt_path))
        layout = {k: getattr(datamodule, k) for k in ("window", "horizon", "features", "target", "target_transform")}
        log.info("%s from %s: %s (data.* layout from the checkpoint)", type(model).__name__, cfg.ckpt_path, layout)
        trainer = build_trainer(cfg)
        metrics.update(test_and_write(trainer, model, datamodule, out))
        if metrics["intervals"] == NO_INTERVALS and datamodule.calibration_note:  # its validation windows: in-sample
            metrics["intervals"] = datamodule.calibration_note
        metrics.update(split_info(datamodule))
        metrics.update(status="completed", model=type(model).__name__, num_parameters=model.num_parameters,
                       data=datamodule.source, **layout)
        if trainer.is_global_zero:
            print_summary(metrics)
        return metrics
    except BaseException as err:
        cause = user_error(err) or err
        metrics.update(status="failed", error=f"{type(cause).__name__}: {cause}")
        raise
    finally:
        write_json(out / "metrics.json", metrics)
