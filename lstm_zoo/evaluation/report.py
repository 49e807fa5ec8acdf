"""What a run reports: the summary table (console and log file), and TensorBoard's HPARAMS tab."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from lstm_zoo.evaluation.metrics import METRICS, format_pvalue

if TYPE_CHECKING:
    from lstm_zoo.models import Forecaster

log = logging.getLogger(__name__)


def print_summary(metrics: dict) -> None:
    """Model and persistence side by side (per ticker when there are several, then pooled over them); skill and the
    Diebold-Mariano test say whether the model is better."""
    def cell(value: float | None, width: int = 9) -> str:
        return f"{value:>{width}.3f}" if value is not None and math.isfinite(value) else f"{'n/a':>{width}}"

    tickers = metrics.get("tickers") or []
    prefixes = [(f"test/{t}/", f"{t} ") for t in tickers] if len(tickers) > 1 else [("test/", "")]
    width = max(len(label) for _, label in prefixes) + 12
    lines = [f"{'':<{width}} " + " ".join(f"{m.label:>9}" for m in METRICS)]
    for prefix, label in prefixes:
        lines.append(f"{label + 'model':<{width}} " + " ".join(f"{m.format(metrics.get(prefix + m.name)):>9}"
                                                               for m in METRICS))
        persistence = [metrics.get(prefix + "persistence_" + m.name) if m.persistence else m.persistence_value
                       for m in METRICS]
        lines.append(f"{label + 'persistence':<{width}} " + " ".join(
            f"{'' if v is None else m.format(v):>9}" for m, v in zip(METRICS, persistence)).rstrip())
    pooled = len(tickers) > 1
    skill = metrics.get("test/pooled/skill" if pooled else "test/skill")
    pvalue = metrics.get("test/pooled/dm_pvalue" if pooled else "test/dm_pvalue")
    if skill is not None and pvalue is not None:
        verdict = "beats" if skill > 0 else "does not beat"
        significant = "significant" if pvalue < 0.05 else "not significant"
        what = (f"Pooled over {len(tickers)} tickers (squared errors relative to persistence's on each ticker), the "
                "model" if pooled else "The model")
        lines.append(f"{what} {verdict} persistence ('tomorrow = today') on RMSE (skill {skill:+.3f}); "
                     f"Diebold-Mariano p = {format_pvalue(pvalue)} ({significant} at 5%).")
    shown = ["\nTest period, in price units:\n" + "\n".join(lines)]
    names = [k.removeprefix("test/coverage_") for k in metrics if k.startswith("test/coverage_")]
    if names:
        keys = [f"{kind}_{name}" for name in names for kind in ("coverage", "width")] + ["pinball", "crps"]
        header = [f"{kind} {name}%" for name in names for kind in ("cover", "width")] + ["pinball", "CRPS"]
        rows = [f"{'':<12} " + " ".join(f"{h:>10}" for h in header)]
        for label, prefix in (("model", "test/"), ("persistence", "test/persistence_")):
            rows.append(f"{label:<12} " + " ".join(cell(metrics.get(prefix + k), 10) for k in keys))
        shown.append(f"Prediction intervals ({metrics.get('intervals')}; persistence: split-conformal):\n"
                     + "\n".join(rows))
    elif metrics.get("intervals"):
        shown.append(f"Prediction intervals: {metrics['intervals']}.")
    print("\n".join(shown))
    to_log_files("\n".join(shown))


def to_log_files(text: str) -> None:
    """`text` into the log files (Hydra's train.log) only: the console has it already, from print."""
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, "%s", (text,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def experiment_hparams(cfg: DictConfig, model: Forecaster) -> dict:
    """The values that define an experiment, for TensorBoard's HPARAMS tab (the full config is in .hydra/).

    model.* (architecture, init, optimizer and scheduler settings), data.* (series, features, split, window),
    the seed, the trainer's epochs and precision, and the names of the chosen model/optimizer/scheduler/experiment.
    """
    choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}
    params = {"experiment": choices.get("experiment") or "none", "model": choices.get("model", type(model).__name__),
              "optimizer": choices.get("optimizer"), "scheduler": choices.get("scheduler") or "none",
              "seed": cfg.seed, "trainer/max_epochs": cfg.trainer.get("max_epochs"),
              "trainer/precision": cfg.trainer.get("precision"), "model/class": type(model).__name__,
              "model/num_parameters": model.num_parameters}
    skip = {"_target_", "_partial_", "date_column", "date_format", "sep"}

    def leaves(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if key in skip:
                continue
            if isinstance(value, dict):
                leaves(value, f"{prefix}/{key}")
            else:
                params[f"{prefix}/{key}"] = ",".join(map(str, value)) if isinstance(value, list) else value

    for group in ("model", "data", "backtest"):
        if cfg.get(group) is not None:
            leaves(OmegaConf.to_container(cfg[group], resolve=True), group)
    leading = leading_hparams()
    return {(name[0].upper() + name[1:] if name in leading else name): value for name, value in params.items()}


def leading_hparams() -> set[str]:
    """The HPARAMS names a reader looks for first: model, seed and, in a sweep, the swept fields.

    TensorBoard lists the hyper-parameters whose values differ first, then by name; over `--logdir outputs` nearly
    every field differs somewhere, so these names start with a capital letter (`Model`, `Seed`,
    `Data/target_transform`), which sorts before every lower-case one.
    """
    swept = []
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        swept = [o.split("=", 1)[0].lstrip("+~").replace(".", "/") for o in HydraConfig.get().overrides.task]
    return {"model", "seed", *swept}


def log_experiment(logger, params: dict) -> None:
    """This run's hyper-parameters for TensorBoard's HPARAMS tab, against hp/val_rmse, hp/test_rmse, hp/test_skill.

    Lightning's TensorBoardLogger also writes an experiment summary into every run, and TensorBoard then shows
    the first run's, in name order. Without it TensorBoard builds the experiment from all runs of a sweep and
    lists the hyper-parameters whose values differ first: the ones a comparison is about.
    """
    metrics = {"hp/val_rmse": math.nan, "hp/test_rmse": math.nan, "hp/test_skill": math.nan}
    if not isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(params, metrics=metrics)
        return
    if rank_zero_only.rank == 0:
        _, session_start, session_end = hparams(logger._sanitize_params(params), metrics)
        writer = logger.experiment._get_file_writer()
        writer.add_summary(session_start)
        writer.add_summary(session_end)
