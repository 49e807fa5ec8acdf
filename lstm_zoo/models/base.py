"""`Forecaster`: the shared training, evaluation and logging logic of every model in the zoo."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection

from lstm_zoo.data.windows import Batch
from lstm_zoo.evaluation.metrics import compare_with_persistence, forecast_metrics, persistence_forecast
from lstm_zoo.models.init import check_init
from lstm_zoo.optim import KerasRMSprop


class Forecaster(L.LightningModule):
    """Base LightningModule: maps windows (B, window, n_features) to forecasts (B, horizon).

    Subclasses only build layers in `__init__` (after `super().__init__(**kwargs)`) and define `forward`.

    Args:
        n_features, horizon, window: the data layout, passed in by the pipeline from the data module.
        optimizer: a partial optimizer (`_partial_: true` in conf/optimizer), completed with the parameters.
        scheduler: an optional partial LR scheduler, stepped on `val/loss`.
        init: the weight initialization of every layer, `keras` or `torch` (see lstm_zoo.models.init); each
            subclass applies it with `init_weights(self, self.hparams.init)` once its layers exist.
    """

    def __init__(self, n_features: int = 1, horizon: int = 1, window: int = 60,
                 optimizer: Callable[..., Optimizer] | None = None,
                 scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
                 init: Literal["keras", "torch"] = "keras") -> None:
        super().__init__()
        check_init(init)
        # plain numbers only in hparams (no partials): checkpoints then load with weights_only=True
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.loss_fn = nn.MSELoss()
        # epoch means of the losses, weighted by batch size (synced over DDP ranks by torchmetrics); logged once per
        # epoch: each `self.log` call costs Lightning about 1 ms, 5-8% of a CPU epoch when made every batch. A NaN
        # loss must stay NaN (the pipeline stops on it): "warn"/"ignore" drop NaN batches from the mean, and
        # "disable" drops the batch-size weights too (torchmetrics 1.9), so NaN is "imputed" with NaN
        self.train_loss = MeanMetric(nan_strategy=float("nan"))
        self.val_loss = MeanMetric(nan_strategy=float("nan"))
        self.val_metrics = MetricCollection({"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError()},
                                            prefix="val/")
        # persistence on the same validation days: val/rmse below it means skill, comparable across target_transform
        self.val_persistence_rmse = MeanSquaredError(squared=False)
        self.test_results: dict[str, Tensor] = {}
        self.test_metrics: dict[str, float] = {}  # float64 from computation to metrics.json (self.log is float32)
        self._test_batches: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define forward: (B, window, features) -> (B, horizon)")

    def training_forward(self, x: Tensor, y: Tensor) -> Tensor:
        """The forward pass of training steps; a model that learns from the targets (teacher forcing) overrides it."""
        return self(x)

    @property
    def num_parameters(self) -> int:
        """Trainable parameters (Keras init freezes nn.LSTM's duplicate bias: it is not a parameter in Keras)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch.x, batch.y
        loss = self.loss_fn(self.training_forward(x, y), y)
        if not torch.isfinite(loss):
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            raise FloatingPointError(f"training loss is {loss.item()} at epoch {self.current_epoch}, step "
                                     f"{self.global_step} (lr={lr:g}): the run diverged. Fix: a smaller "
                                     "optimizer.lr, or gradient clipping (trainer.gradient_clip_val=1.0).")
        self.train_loss.update(loss.detach(), len(x))
        every = self.trainer.log_every_n_steps
        if every and (self.global_step + 1) % every == 0:  # the only steps whose values Lightning writes to loggers
            self.log("train/loss_step", loss.detach(), prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss_epoch", self.train_loss.compute(), prog_bar=True, sync_dist=True)
        self.train_loss.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        y_hat = self(batch.x)
        self.val_loss.update(self.loss_fn(y_hat, batch.y), len(y_hat))
        pred = self.trainer.datamodule.to_price(y_hat, batch.last, batch.ticker).float()
        actual = batch.actual.float()
        self.val_metrics.update(pred, actual)
        self.val_persistence_rmse.update(persistence_forecast(batch.last, actual.shape[1]).float(), actual)

    def on_validation_epoch_end(self) -> None:  # compute() syncs over DDP ranks; sync_dist averages equal values
        self.log("val/loss", self.val_loss.compute(), prog_bar=True, sync_dist=True)
        self.log_dict(self.val_metrics.compute(), sync_dist=True)
        self.log("val/persistence_rmse", self.val_persistence_rmse.compute(), sync_dist=True)
        for metric in (self.val_loss, self.val_metrics, self.val_persistence_rmse):
            metric.reset()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        y_hat = self(batch.x)
        self.log("test/loss", self.loss_fn(y_hat, batch.y), batch_size=len(y_hat), sync_dist=True)
        # float64 prices: the true ones from the data, not a float32 round trip through the scaler
        self._test_batches.append((self.trainer.datamodule.to_price(y_hat, batch.last, batch.ticker), batch.actual,
                                   batch.last, batch.ticker))

    def on_test_epoch_start(self) -> None:
        self._test_batches.clear()

    def on_test_epoch_end(self) -> None:
        """Metrics in price units for the model and for persistence, over the whole test period at once."""
        pred, actual, last, ticker = (torch.cat(parts) for parts in zip(*self._test_batches))
        self._test_batches.clear()
        persistence = persistence_forecast(last, actual.shape[1])
        self.test_results = {"pred": pred, "actual": actual, "persistence": persistence, "ticker": ticker}
        metrics = {f"test/{k}": v for k, v in forecast_metrics(pred, actual).items()}
        metrics.update({f"test/persistence_{k}": v for k, v in forecast_metrics(persistence, actual).items()})
        metrics.update({f"test/{k}": v for k, v in compare_with_persistence(pred, actual, last).items()})
        self.test_metrics = metrics  # skill, direction, Diebold-Mariano included; float64 Python floats
        self.log_dict(metrics)  # progress bar and TensorBoard (float32 there)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the class as an import path (a plain string): eval.py rebuilds the model from the checkpoint alone
        checkpoint["forecaster_class"] = f"{type(self).__module__}.{type(self).__qualname__}"

    def configure_optimizers(self):
        factory = self.optimizer_factory or KerasRMSprop
        optimizer = factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
