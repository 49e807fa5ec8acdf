"""Callbacks that inject faults into a run (`+callbacks.x._target_=reliability_helpers.KillAt`), and TINY runs."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# tiny, quiet runs: 1 LSTM layer of 8 units over 10-day windows
TINY = ["data.window=10", "model.hidden_size=8", "model.num_layers=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


class SignalAfterEpoch(L.Callback):
    """Sends `signum` to this process as epoch `epoch + 1` starts: epoch `epoch`'s last.ckpt is on disk by then."""

    def __init__(self, epoch: int, signum: str = "SIGTERM") -> None:
        self.epoch, self.signum = epoch, getattr(signal, signum)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch + 1:
            os.kill(os.getpid(), self.signum)


class StallAt(L.Callback):
    """Stops making progress as epoch `epoch` starts (epoch `epoch - 1`'s last.ckpt is on disk by then), as a job
    that can never end in time: it sleeps until a signal ends it, leaving the CPU to others."""

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        while trainer.current_epoch == self.epoch:  # for ever
            time.sleep(60)


class RaiseOnRank(L.Callback):
    """Fails one DDP rank in its first training batch, as a crash on one machine would."""

    def __init__(self, rank: int = 1) -> None:
        self.rank = rank

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_rank == self.rank:
            raise RuntimeError(f"injected failure on rank {self.rank}")


class PoisonWeights(L.Callback):
    """Turns the model's weights into NaN during epoch `epoch`, after its last optimizer step: a NaN validation loss."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        if trainer.current_epoch != self.epoch or batch_idx != trainer.num_training_batches - 1:
            return
        with torch.no_grad():
            for p in pl_module.parameters():
                p.fill_(float("nan"))


class KillAt(L.Callback):
    """SIGKILLs this process, as the out-of-memory killer would (no handler runs), at the first instant it reaches
    of `instants` that has not fired `times` times yet (marker files in `marks` count firings across processes), so
    re-running the same command gets one instant further each time.

    Instants: "batch:E:B" (train batch B of epoch E starts), "write:E:NAME" (halfway through writing the checkpoint
    file NAME at the end of epoch E; the bytes written so far reach the disk), "test" (the first test batch).
    `seed`/`only_seed`: fire only in the sweep job whose seed is `only_seed`.
    """

    def __init__(self, marks: str, instants: list[str], times: int = 1, seed: int | None = None,
                 only_seed: int | None = None) -> None:
        self.marks, self.instants, self.times = Path(marks), list(instants), times
        self.armed = only_seed is None or seed == only_seed

    def fire(self, instant: str) -> bool:
        """True (and counted) if `instant` is due here and now."""
        if not self.armed or instant not in self.instants:
            return False
        name = instant.replace(":", "_")
        fired = len(list(self.marks.glob(f"{name}.*")))
        if fired >= self.times:
            return False
        self.marks.mkdir(parents=True, exist_ok=True)
        (self.marks / f"{name}.{fired}").touch()
        return True

    def stop(self, instant: str) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.fire(f"batch:{trainer.current_epoch}:{batch_idx}"):
            self.stop(f"batch:{trainer.current_epoch}:{batch_idx}")

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int,
                            dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and self.fire("test"):
            self.stop("test")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        due = [i for i in self.instants if i.startswith(f"write:{trainer.current_epoch}:")]
        if not due or torch.save.__name__ == "dying_save":
            return
        real_save, name = torch.save, due[0].split(":", 2)[2]

        def dying_save(obj, f, *args, **kwargs):  # the checkpoint writer's torch.save, into its open file
            if Path(getattr(f, "name", "")).name.startswith(f".{name}.") and self.fire(due[0]):
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)

        torch.save = dying_save


class FailAt(KillAt):
    """KillAt's instants ("batch:E:B", "test"), but the run fails with an error instead of being killed."""

    def stop(self, instant: str) -> None:
        raise RuntimeError(f"injected failure at {instant}")


class InterruptAt(KillAt):
    """KillAt's instants, but Ctrl-C (SIGINT) instead of SIGKILL: the run's handlers run."""

    def stop(self, instant: str) -> None:
        os.kill(os.getpid(), signal.SIGINT)
