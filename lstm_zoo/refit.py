"""Walk-forward refit every k folds (`backtest.refit_every`): a fold between refits reuses its refit fold's model.

Fold k's job trains on the training period of its refit fold f = r * (k // r) (`WalkForward.period`), with the
same seed and configuration as fold f's own job, so both fit the same model. When fold f's job of the same sweep
has already completed, fold k's job tests that job's best checkpoint instead of training it again; otherwise it
trains it itself. Jobs therefore never wait for each other, and whichever way a job gets its model, the model has
seen no price on or after fold f's first test day, which is at or before fold k's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lstm_zoo.checkpoints import load_checkpoint
from lstm_zoo.errors import CheckpointError
from lstm_zoo.lifecycle import config_id
from lstm_zoo.records import read_record

log = logging.getLogger(__name__)


def refit_fold(cfg: DictConfig) -> int | None:
    """The fold whose model this run's fold reuses; None when the run trains its own fold (or is no backtest)."""
    backtest = cfg.get("backtest")
    if backtest is None or int(backtest.get("refit_every") or 1) <= 1:
        return None
    every, fold = int(backtest.refit_every), int(backtest.fold)
    refit = every * (fold // every)
    return refit if refit != fold else None


def refit_checkpoint(cfg: DictConfig, out: Path) -> Path | None:
    """The best checkpoint of this run's refit-fold job, when that job has completed in the same sweep folder
    (`out`'s parent) with this configuration (only `backtest.fold` differs); None otherwise (the run trains)."""
    fold = refit_fold(cfg)
    if fold is None or cfg.get("test_checkpoint", "best") != "best" or not out.parent.is_dir():
        return None
    twin = cfg.copy()
    OmegaConf.update(twin, "backtest.fold", fold)
    wanted = config_id(twin)
    for folder in sorted(p for p in out.parent.iterdir() if p.is_dir() and p != out):
        record = read_record(folder)
        if not record or record.get("status") != "completed" or record.get("config_id") != wanted:
            continue
        best = record.get("best_checkpoint")
        path = folder / "checkpoints" / Path(best).name if best else None  # the folder may have moved since
        if path is None or not path.is_file():
            continue
        try:
            load_checkpoint(path)
        except CheckpointError as err:
            log.warning("refit fold %d's checkpoint %s is unusable (%s): this fold trains its model itself.",
                        fold, path, err)
            continue
        return path
    return None
