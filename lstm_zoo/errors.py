"""The errors users see, and how entry points turn them into one line: a message that names the file or field and
the fix, exit 1, no traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lstm_zoo.records import remove_empty_run_folder


class DataError(ValueError):
    """A problem with the input data or the data config, worded for the user."""


class ConfigError(ValueError):
    """A config value out of range, or impossible on this machine, worded for the user."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or unsafe to load, worded for the user."""


T = TypeVar("T")
# errors whose message is the whole story: entry points print one line for them instead of a traceback
USER_ERRORS = (DataError, ConfigError, CheckpointError, FloatingPointError)


def user_error(err: BaseException | None) -> BaseException | None:
    """The user-facing error behind `err`, also when Hydra's instantiate wrapped it in an InstantiationException.

    Lightning's MisconfigurationException is one too. Only Lightning raises it, so it is looked up once Lightning is
    loaded: importing Lightning for it would cost every entry point seconds, also for `--help`.
    """
    kinds: tuple[type[BaseException], ...] = USER_ERRORS
    if "lightning" in sys.modules:
        from lightning.pytorch.utilities.exceptions import MisconfigurationException
        kinds = (*kinds, MisconfigurationException)
    while err is not None and not isinstance(err, kinds):
        err = err.__cause__
    return err


def exit_on_user_error(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    """An entry point's task: a user error (bad data, config or checkpoint) is logged as one line and exits 1; in a
    multirun it is re-raised without its traceback, so the sweep runs its other jobs and then exits 1."""
    try:
        return task(cfg)
    except Exception as err:
        cause = user_error(err)
        if cause is None:
            raise
        logging.getLogger(task.__module__).error("%s: %s", type(cause).__name__, cause)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise cause.with_traceback(None) from None
        if HydraConfig.initialized():  # no empty folder per mistyped command; a run normally leaves its record
            remove_empty_run_folder(Path(HydraConfig.get().runtime.output_dir))
        sys.exit(1)
