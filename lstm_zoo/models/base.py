"""`Forecaster`: the shared training, evaluation and logging logic of every model in the zoo."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from lstm_zoo.metrics import compare_with_persistence, forecast_metrics, persistence_forecast
from lstm_zoo.optim import KerasRMSprop


class Forecaster(L.LightningModule):
    """Base LightningModule: maps windows (B, window, n_features) to forecasts (B, horizon).

    Subclasses only build layers in `__init__` (after `super().__init__(**kwargs)`) and define `forward`.

    Args:
        n_features, horizon, window: the data layout, passed in by the pipeline from the data module.
        optimizer: a partial optimizer (`_partial_: true` in conf/optimizer), completed with the parameters.
        scheduler: an optional partial LR scheduler, stepped on `val/loss`.
    """

    def __init__(self, n_features: int = 1, horizon: int = 1, window: int = 60,
                 optimizer: Callable[..., Optimizer] | None = None,
                 scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None) -> None:
        super().__init__()
        # plain numbers only in hparams (no partials): checkpoints then load with weights_only=True
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.loss_fn = nn.MSELoss()
        self.val_metrics = MetricCollection({"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError()},
                                            prefix="val/")
        # persistence on the same validation days: val/rmse below it means skill, comparable across target_transform
        self.val_persistence_rmse = MeanSquaredError(squared=False)
        self.test_results: dict[str, Tensor] = {}
        self._test_batches: list[tuple[Tensor, Tensor, Tensor]] = []

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define forward: (B, window, features) -> (B, horizon)")

    def training_forward(self, x: Tensor, y: Tensor) -> Tensor:
        """The forward pass of training steps; a model that learns from the targets (teacher forcing) overrides it."""
        return self(x)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _shared_step(self, batch: tuple[Tensor, Tensor, Tensor], stage: str) -> tuple[Tensor, Tensor]:
        x, y, _ = batch
        y_hat = self.training_forward(x, y) if stage == "train" else self(x)
        loss = self.loss_fn(y_hat, y)
        # val/test loss averaged over all DDP ranks (torchmetrics objects sync themselves); a no-op on one device
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=len(x),
                 sync_dist=stage != "train")
        return loss, y_hat

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._shared_step(batch, "train")
        if not torch.isfinite(loss):
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            raise FloatingPointError(f"training loss is {loss.item()} at epoch {self.current_epoch}, step "
                                     f"{self.global_step} (lr={lr:g}): the run diverged. Fix: a smaller "
                                     "optimizer.lr, or gradient clipping (trainer.gradient_clip_val=1.0).")
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        _, y_hat = self._shared_step(batch, "val")
        to_price = self.trainer.datamodule.to_price
        actual = to_price(batch[1], batch[2])
        self.val_metrics.update(to_price(y_hat, batch[2]), actual)
        self.val_persistence_rmse.update(persistence_forecast(batch[2], actual.shape[1]), actual)
        self.log_dict(self.val_metrics, on_epoch=True, batch_size=len(y_hat))
        self.log("val/persistence_rmse", self.val_persistence_rmse, on_epoch=True, batch_size=len(y_hat))

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        _, y_hat = self._shared_step(batch, "test")
        to_price = self.trainer.datamodule.to_price
        self._test_batches.append((to_price(y_hat, batch[2]), to_price(batch[1], batch[2]), batch[2]))

    def on_test_epoch_start(self) -> None:
        self._test_batches.clear()

    def on_test_epoch_end(self) -> None:
        """Metrics in price units for the model and for persistence, over the whole test period at once."""
        pred, actual, last = (torch.cat(parts) for parts in zip(*self._test_batches))
        self._test_batches.clear()
        persistence = persistence_forecast(last, actual.shape[1])
        self.test_results = {"pred": pred, "actual": actual, "persistence": persistence}
        for prefix, forecast in (("test/", pred), ("test/persistence_", persistence)):
            for key, value in forecast_metrics(forecast, actual).items():
                self.log(prefix + key, value)
        for key, value in compare_with_persistence(pred, actual, last).items():  # skill, direction, Diebold-Mariano
            self.log("test/" + key, value)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the class as an import path (a plain string): eval.py rebuilds the model from the checkpoint alone
        checkpoint["forecaster_class"] = f"{type(self).__module__}.{type(self).__qualname__}"

    def configure_optimizers(self):
        factory = self.optimizer_factory or KerasRMSprop
        optimizer = factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
