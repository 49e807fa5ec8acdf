"""Callbacks: the tutorial's actual-vs-predicted plot (PNG + TensorBoard) and TensorBoard views inside models."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import lightning as L
import matplotlib
import numpy as np
import pandas as pd
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch.callbacks import ModelSummary  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count  # noqa: E402

from lstm_zoo.evaluation.metrics import step_columns  # noqa: E402
from lstm_zoo.timing import EpochTimer  # noqa: E402

log = logging.getLogger(__name__)
DPI = 110  # the PNG's and TensorBoard's resolution


def render(fig: plt.Figure, dpi: int = DPI) -> np.ndarray:
    """The figure drawn once, as an (H, W, 4) RGBA array that both the PNG and TensorBoard take, then closed:
    `savefig` and TensorBoard's `add_figure` would each draw it again (the same PNG at 0.58x the CPU time)."""
    fig.set_dpi(dpi)
    fig.canvas.draw()
    image = np.array(fig.canvas.buffer_rgba())
    plt.close(fig)
    return image


class ForecastPlot(L.Callback):
    """The test period's actual vs predicted prices (one step ahead, and the last step when horizon > 1) with the
    model's prediction intervals one step ahead, one panel per ticker, drawn from the predictions frame (PNG and
    TensorBoard). The pipeline draws it once the frame exists, for each ForecastPlot among the trainer's callbacks:
    leave it out of the callbacks (~callbacks.forecast_plot) for no plot."""

    def __init__(self, dirpath: str | None = None, filename: str = "forecast.png") -> None:
        self.dirpath, self.filename = dirpath, filename

    def draw(self, frame: pd.DataFrame, trainer: L.Trainer, model_name: str, target: str) -> None:
        """Plot `frame` (predictions.csv's rows) into dirpath (default: the trainer's root folder) and TensorBoard."""
        if not trainer.is_global_zero:
            return
        tickers = list(dict.fromkeys(frame["ticker"]))
        fig, axes = plt.subplots(len(tickers), 1, figsize=(11, 4.5 * len(tickers)), squeeze=False)
        for ax, ticker in zip(axes[:, 0], tickers):
            rows = frame[frame["ticker"] == ticker]
            levels = sorted({c.split("_")[1] for c in rows.columns if c.startswith("lower_")}, key=float)
            bands = {float(level) / 100: (rows[step_columns(rows, f"lower_{level}")].to_numpy(),
                                          rows[step_columns(rows, f"upper_{level}")].to_numpy()) for level in levels}
            self._panel(ax, pd.to_datetime(rows["date"]).to_numpy(), rows[step_columns(rows, "actual")].to_numpy(),
                        rows[step_columns(rows, "predicted")].to_numpy(), target, bands)
            name = f" {ticker}" if len(tickers) > 1 else ""
            ax.set_title(f"{model_name}:{name} {target} price prediction")
        fig.autofmt_xdate()
        fig.tight_layout()
        dirpath = Path(self.dirpath or trainer.default_root_dir)
        dirpath.mkdir(parents=True, exist_ok=True)
        image = render(fig)
        plt.imsave(dirpath / self.filename, image, dpi=DPI)
        for writer in tensorboards(trainer):
            writer.add_image("test/forecast", image, global_step=trainer.global_step, dataformats="HWC")

    @staticmethod
    def _panel(ax: plt.Axes, dates, actual: np.ndarray, pred: np.ndarray, target: str,
               bands: dict[float, tuple[np.ndarray, np.ndarray]]) -> None:
        ax.plot(dates, actual[:, 0], color="red", label=f"Real {target} price")
        ax.plot(dates, pred[:, 0], color="blue", label=f"Predicted {target} price (1 day ahead)")
        for k, (level, (lower, upper)) in enumerate(sorted(bands.items(), reverse=True)):  # widest first, lightest
            ax.fill_between(dates, lower[:, 0], upper[:, 0], color="tab:blue", alpha=0.12 + 0.15 * k, linewidth=0,
                            label=f"{100 * level:g}% interval (1 day ahead)")
        horizon = pred.shape[1]
        if horizon > 1:
            # the h-step forecast made on day t is for the day h-1 rows after t's first target day
            ax.plot(dates[horizon - 1 :], pred[: len(dates) - horizon + 1, -1], color="green", alpha=0.7,
                    label=f"Predicted (made {horizon} days ahead)")
        ax.set(xlabel="Date", ylabel=f"{target} price")
        ax.legend()


class ParameterSummary(ModelSummary):
    """Lightning's model summary (into the log, so train.log has it too) without its FLOPs column and total.

    Lightning 2.6 counts FLOPs only with an `example_input_array` and torch's counter does not see the fused
    LSTM kernels anyway, so it printed "0" for every model: a number nobody can act on.
    """

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int = 0, **kwargs) -> None:
        columns = [(name, [str(v) for v in values]) for name, values in summary_data if name not in ("FLOPs", "Mode")]
        widths = [max(len(name), *(len(v) for v in values)) if values else len(name) for name, values in columns]
        rows = [" | ".join(name.ljust(w) for (name, _), w in zip(columns, widths))]
        rows.append("-" * len(rows[0]))
        rows += [" | ".join(values[i].ljust(w) for (_, values), w in zip(columns, widths))
                 for i in range(len(columns[0][1]))]
        frozen = total_parameters - trainable_parameters
        rows.append(f"{get_human_readable_count(trainable_parameters).strip()} trainable parameters"
                    + (f" ({get_human_readable_count(frozen).strip()} frozen)" if frozen else "")
                    + f", {model_size:.3f} MB")
        log.info("Model:\n%s", "\n".join(rows))


class RNGState(L.Callback):
    """Saves and restores the torch, numpy and python RNG states in checkpoints: Lightning does not.

    Dropout and the shuffling of training windows draw from these generators, so without them a run resumed
    from `last.ckpt` diverges from an uninterrupted one; with them it is bit-identical at epoch boundaries.
    The states are stored as tensors and lists, so checkpoints still load with `weights_only=True`.
    """

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                 int(has_gauss), float(gauss)], "python": [version, list(internal), gauss_next]}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

def tensorboards(trainer: L.Trainer) -> list:
    """The SummaryWriters of the run's TensorBoard loggers, on the main process only."""
    if not trainer.is_global_zero:
        return []
    return [logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


class ModelViews(L.Callback):
    """TensorBoard views of any model: its parameter count (scalar `model/num_parameters`), a histogram of
    each layer's peephole weights after every epoch (models with `peephole` parameters), and a heatmap of the
    attention weights over the window for `n_days` test days (models whose forward takes `return_weights`).
    """

    def __init__(self, n_days: int = 6) -> None:
        self.n_days = n_days

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        count = sum(p.numel() for p in pl_module.parameters())
        for writer in tensorboards(trainer):
            writer.add_scalar("model/num_parameters", count, 0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        peepholes = [(n, p) for n, p in pl_module.named_parameters() if "peephole" in n.rsplit(".", 1)[-1]]
        for writer in tensorboards(trainer):
            for name, weight in peepholes:  # rows: input, forget, output gate
                for row, gate in enumerate(("input", "forget", "output")):
                    writer.add_histogram(f"peephole/{name}/{gate}", weight[row].detach().cpu(), trainer.current_epoch)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = tensorboards(trainer)
        if not writers or not hasattr(pl_module, "attention"):
            return
        dataset, dates = trainer.datamodule.datasets["test"], trainer.datamodule.test_dates
        index = torch.linspace(0, len(dataset) - 1, min(self.n_days, len(dataset))).long().tolist()
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            _, weights = pl_module(dataset.x[index].to(pl_module.device), return_weights=True)  # (days, W)
        pl_module.train(was_training)
        window = weights.shape[1]
        fig, ax = plt.subplots(figsize=(10, 0.5 * len(index) + 1.5))
        image = ax.imshow(weights.cpu().numpy(), aspect="auto", cmap="viridis",
                          extent=(-window - 0.5, -0.5, len(index) - 0.5, -0.5))
        ax.set_yticks(range(len(index)), [f"{dates[i].date()}" for i in index])
        ax.set(xlabel="day in the window (-1: the last known day)", ylabel="forecast for",
               title="Attention weights over the window")
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        heatmap = render(fig)
        for writer in writers:
            writer.add_image("test/attention", heatmap, global_step=trainer.global_step, dataformats="HWC")


class EpochLog(EpochTimer):
    """One log line per epoch (epoch, train and validation loss, seconds), through Python logging: it reaches
    Hydra's train.log and a non-TTY console (a SLURM or nohup log), which a progress bar never does. It is the run's
    EpochTimer, so the seconds it logs (training plus validation) are the epoch's in metrics.json's `timing`."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # callbacks run before the module's own on_train_epoch_end logs train/loss_epoch: read its running mean
        train = pl_module.train_loss.compute() if hasattr(pl_module, "train_loss") else None
        if not trainer.is_global_zero:
            return
        values = {"train/loss": train, "val/loss": trainer.callback_metrics.get("val/loss")}
        losses = "".join(f", {name} {float(value):.6f}" for name, value in values.items() if value is not None)
        seconds = self.epochs[-1]["train"] + self.epochs[-1]["validation"]
        log.info("epoch %d/%d%s, %.1f s", trainer.current_epoch + 1, trainer.max_epochs, losses, seconds)
