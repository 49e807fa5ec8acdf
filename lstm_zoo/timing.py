"""Where a run's wall time goes, for metrics.json's `timing` and the run's log (see docs/experiments.md).

The parts partition the job's wall time, so they add up to it: `startup` (the process start to the task: the
interpreter, imports and config composition; 0 for a later job of a sweep worker that already ran one), `build`
(the run folder's plan, the data module, model, callbacks, logger and trainer), `data` (reading and windowing the
data inside `trainer.fit`), `train` and `validation` (every epoch's, also listed per epoch under `epochs`),
`fit_other` (the rest of `fit`: checkpoint writes, callbacks, the loop), `best_validation` (re-scoring the best
checkpoint), `test` (the test pass and its plot) and `write` (predictions.csv, the summary, the logs).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import lightning as L

from lstm_zoo.records import process_stat

log = logging.getLogger(__name__)
PARTS = ("startup", "build", "data", "train", "validation", "fit_other", "best_validation", "test", "write")
_first_job_of_process = True


def process_age() -> float:
    """Seconds since this process started (from /proc), for the first run of a process; 0 later or without /proc."""
    global _first_job_of_process
    first, _first_job_of_process = _first_job_of_process, False
    stat = process_stat(os.getpid())
    if not first or stat is None:
        return 0.0
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(uptime - int(stat[1]) / os.sysconf("SC_CLK_TCK"), 0.0)


class EpochTimer(L.Callback):
    """Inside `trainer.fit`: when the data were set up, and each epoch's training and validation seconds (the
    validation Lightning runs at the end of a training epoch is counted as validation, not training). A trainer has
    one (`build_trainer`): the config's EpochLog, which logs each epoch from it, or a plain one."""

    def __init__(self) -> None:
        self.setup_done: float | None = None
        self.epochs: list[dict[str, float]] = []
        self.sanity_validation = 0.0
        self._epoch_start = self._val_start = 0.0
        self._val_in_epoch = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # Lightning calls the data module's setup just before the callbacks'
            self.setup_done = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start, self._val_in_epoch = time.perf_counter(), 0.0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit":
            return  # a validate() call after fit: best_validation's
        seconds = time.perf_counter() - self._val_start
        if trainer.sanity_checking:
            self.sanity_validation += seconds
        else:
            self._val_in_epoch += seconds

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        span = time.perf_counter() - self._epoch_start
        self.epochs.append({"train": span - self._val_in_epoch, "validation": self._val_in_epoch})


class Stopwatch:
    """Consecutive laps of one run: `lap(part)` adds the seconds since the previous lap to `part`."""

    def __init__(self, startup: float = 0.0) -> None:
        self.parts = dict.fromkeys(PARTS, 0.0)
        self.parts["startup"] = startup
        self.started = self.mark = time.perf_counter()

    def lap(self, part: str) -> float:
        now = time.perf_counter()
        self.parts[part] += now - self.mark
        self.mark = now
        return now

    def split_fit(self, fit_started: float, epochs: EpochTimer) -> None:
        """Split the `fit_other` lap just taken (from `fit_started`) into data, train, validation and the rest."""
        data = (epochs.setup_done - fit_started) if epochs.setup_done else 0.0
        train = sum(e["train"] for e in epochs.epochs)
        validation = sum(e["validation"] for e in epochs.epochs) + epochs.sanity_validation
        self.parts["data"] += data
        self.parts["train"] += train
        self.parts["validation"] += validation
        self.parts["fit_other"] -= data + train + validation

    def record(self, epochs: EpochTimer | None = None) -> dict:
        """metrics.json's `timing`: the parts, `wall` (the process start, or the task's, to now) and each epoch's."""
        wall = self.parts["startup"] + time.perf_counter() - self.started
        return {**self.parts, "wall": wall, "epochs": [dict(e) for e in epochs.epochs] if epochs is not None else []}


def describe(timing: dict) -> str:
    """One log line: the parts in seconds and shares of the wall time."""
    wall = timing["wall"] or 1.0
    shown = ", ".join(f"{part} {timing[part]:.1f} s ({timing[part] / wall:.0%})" for part in PARTS if timing[part])
    n = len(timing["epochs"])
    per_epoch = f"; {n} epoch(s), {timing['train'] / n:.2f} s training each" if n else ""
    return f"time: {timing['wall']:.1f} s = {shown}{per_epoch}"
