"""What every task sets up first: where log lines go, and the run's objects built from its config (the one place
that instantiates a config's data module, model and trainer)."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig

from lstm_zoo.callbacks import ForecastPlot
from lstm_zoo.checks import check_config
from lstm_zoo.data import StockDataModule
from lstm_zoo.models import Forecaster
from lstm_zoo.timing import EpochTimer


class DropLightningNoise(logging.Filter):
    """Lines Lightning 2.6 logs at every Trainer start that no user can act on: a tip to install its cloud logger,
    and a note that our own model summary callback replaces its default one. Warnings are never dropped."""

    NOISE = ("litlogger", "Skipping setting a default `ModelSummary` callback")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not any(text in record.getMessage() for text in self.NOISE)


def route_lightning_logs_to_hydra() -> None:
    """Lightning's own handlers do not propagate, so its lines would miss Hydra's log file."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, DropLightningNoise) for f in rank_zero.filters):
        rank_zero.addFilter(DropLightningNoise())
    logging.captureWarnings(True)
    # lightning 2.6 calls a torch pytree API that torch 2.13 deprecates; nothing for users to act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Lightning's hint to start with `srun` wherever that command exists: lstm_zoo's SLURM launchers submit the jobs
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system but is not used.*")


def build(cfg: DictConfig, callbacks: Sequence[Callback] = (), purge_step: int | None = None,
          ) -> tuple[StockDataModule, Forecaster, L.Trainer]:
    """A run's data module, model and trainer from its composed config (conf/train.yaml), as train.py builds them:
    the config checked first (`check_config`), the seed set, then the objects. `callbacks` join the config's; see
    `build_trainer` for `purge_step`."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule: StockDataModule = instantiate(cfg.data, backtest=cfg.get("backtest"))
    model: Forecaster = instantiate(cfg.model, n_features=datamodule.n_features, horizon=datamodule.horizon,
                                    window=datamodule.window, interval_levels=cfg.interval_levels, _convert_="all")
    # a progress bar in a file (SLURM, nohup, a pipe) is carriage-return garbage: EpochLog's lines tell progress there
    quiet = {} if sys.stderr.isatty() else {"enable_progress_bar": False}
    return datamodule, model, build_trainer(cfg, callbacks, purge_step, **quiet)


def build_trainer(cfg: DictConfig, callbacks: Sequence[Callback] = (), purge_step: int | None = None,
                  **options) -> L.Trainer:
    """`cfg.trainer` with the config's callbacks, then `callbacks`, and its logger; `options` set trainer fields.
    `purge_step`: a TensorBoard logger hides what an interrupted attempt logged from this step on. Every trainer
    times its epochs once: by an EpochTimer among the callbacks (the config's EpochLog is one), else one added here."""
    configured = [*(instantiate(c) for c in cfg.callbacks.values() if c is not None), *callbacks]
    if not any(isinstance(c, EpochTimer) for c in configured):
        configured.append(EpochTimer())
    purge = {"purge_step": purge_step} if purge_step is not None and \
        issubclass(get_class(cfg.logger._target_), TensorBoardLogger) else {}
    trainer = instantiate(cfg.trainer, callbacks=configured, logger=instantiate(cfg.logger, **purge), **options)
    bring_back_spawned_fit(trainer)
    return trainer


def single_device_tester(trainer: L.Trainer) -> L.Trainer:
    """A one-device trainer for rank 0: under DDP each rank would see only part of the test set."""
    plots = [c for c in trainer.callbacks if isinstance(c, ForecastPlot)]
    return L.Trainer(accelerator=trainer.accelerator, devices=1, logger=trainer.logger, callbacks=plots,
                     default_root_dir=trainer.default_root_dir, enable_progress_bar=False, enable_model_summary=False)


class SpawnedFitLauncher(_MultiProcessingLauncher):
    """ddp_spawn's launcher, which also brings back how far rank 0's `fit` got: its loop state (the epochs and
    optimizer steps) and its EpochTimer's timings. Lightning's brings back only the weights, the best checkpoint
    path and callback_metrics, so in this (parent) process, which trained nothing, the trainer would say epoch 0
    and step 0 and the EpochTimer would have timed no epoch."""

    TIMED = ("setup_done", "epochs", "sanity_validation")  # what Stopwatch reads from an EpochTimer

    def get_extra_results(self, trainer: L.Trainer) -> dict:
        extra = super().get_extra_results(trainer)
        if trainer.state.fn == TrainerFn.FITTING:  # plain numbers (a callback's vars hold the module)
            extra.update(fit_loop=trainer.fit_loop.state_dict(),
                         epoch_timers=[{k: getattr(c, k) for k in self.TIMED} for c in trainer.callbacks
                                       if isinstance(c, EpochTimer)])
        return extra

    def update_main_process_results(self, trainer: L.Trainer, extra: dict) -> None:
        super().update_main_process_results(trainer, extra)
        if "fit_loop" in extra:
            trainer.fit_loop.load_state_dict(extra["fit_loop"])  # as a resume restores it: current_epoch, global_step
            # perf_counter is CLOCK_MONOTONIC on Linux, one clock for a machine's processes: rank 0's setup_done
            # holds here, and `data` counts starting the ranks too (as under popen, where it counts launching them)
            for timer, state in zip([c for c in trainer.callbacks if isinstance(c, EpochTimer)], extra["epoch_timers"]):
                vars(timer).update(state)


def bring_back_spawned_fit(trainer: L.Trainer) -> None:
    """Under ddp_spawn (any start method but popen) give `trainer` the launcher that brings back the ranks' fit."""
    launcher = trainer.strategy.launcher
    if type(launcher) is _MultiProcessingLauncher:
        trainer.strategy._launcher = SpawnedFitLauncher(trainer.strategy, start_method=launcher._start_method)
