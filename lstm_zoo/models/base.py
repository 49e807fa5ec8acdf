"""`Forecaster`: the shared training, evaluation and logging logic of every model in the zoo."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection

from lstm_zoo.data.windows import Batch
from lstm_zoo.evaluation.intervals import check_levels, check_quantiles, pinball_loss
from lstm_zoo.evaluation.metrics import persistence_forecast
from lstm_zoo.evaluation.predictions import TestForecasts
from lstm_zoo.models.init import check_init
from lstm_zoo.optim import KerasRMSprop


class Forecaster(L.LightningModule):
    """Base LightningModule: maps windows (B, window, n_features) to forecasts (B, horizon).

    Subclasses only build layers in `__init__` (after `super().__init__(**kwargs)`) and define `forward`, whose
    output is (B, `self.output_size`): `horizon` values, times the number of quantiles with a quantile head.

    Args:
        n_features, horizon, window: the data layout, passed in by the pipeline from the data module.
        optimizer: a partial optimizer (`_partial_: true` in conf/optimizer), completed with the parameters.
        scheduler: an optional partial LR scheduler, stepped on `val/loss`.
        init: the weight initialization of every layer, `keras` or `torch` (see lstm_zoo.models.init); each
            subclass applies it with `init_weights(self, self.hparams.init)` once its layers exist.
        quantiles: quantile levels (e.g. [0.1, 0.5, 0.9]) for a quantile head trained with the pinball loss; the
            median is the point forecast. None: a point forecast trained with MSE.
        interval_levels: central levels of the split-conformal intervals reported on the test period (point
            models; a quantile head reports the intervals its quantiles hold).
    """

    def __init__(self, n_features: int = 1, horizon: int = 1, window: int = 60,
                 optimizer: Callable[..., Optimizer] | None = None,
                 scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
                 init: Literal["keras", "torch"] = "keras", quantiles: Sequence[float] | None = None,
                 interval_levels: Sequence[float] = (0.8, 0.95)) -> None:
        super().__init__()
        check_init(init)
        # plain numbers only in hparams (no partials): checkpoints then load with weights_only=True
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.quantiles = check_quantiles(quantiles)
        self.interval_levels = check_levels(interval_levels)
        self.outputs_per_step = len(self.quantiles) if self.quantiles else 1
        self.output_size = horizon * self.outputs_per_step  # what every model's head outputs
        self.median_index = self.quantiles.index(0.5) if self.quantiles else 0
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
        # what the last test run collected, in prices: lstm_zoo.evaluation.predictions makes it predictions.csv's
        # frame, which lstm_zoo.evaluation.metrics.score scores
        self.test_forecasts: TestForecasts | None = None
        self._calibration: tuple[Tensor, Tensor, Tensor] | None = None
        self._test_batches: list[tuple[Tensor, ...]] = []

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define forward: (B, window, features) -> "
                                  "(B, output_size)")

    def forward_batch(self, x: Tensor, ticker: Tensor, tickers: Sequence[str] | None) -> Tensor:
        """forward's output for windows of the data module's tickers `ticker` (B,), indices into `tickers`: a model
        fit per ticker (lstm_zoo.models.baselines) picks each window's fitted values; a global model ignores them."""
        return self(x)

    def training_forward(self, x: Tensor, y: Tensor) -> Tensor:
        """The forward pass of training steps; a model that learns from the targets (teacher forcing) overrides it."""
        return self(x)

    def to_forecast(self, out: Tensor) -> Tensor:
        """forward's output (B, output_size) -> point forecasts (B, H), or ordered quantiles (B, H, Q).

        Quantiles are ordered by construction (no crossing, no sorting): the median is an output of its own, and
        each quantile above (below) it is the next one up (down) plus a softplus-positive gap.
        """
        if not self.quantiles:
            return out
        out = out.unflatten(-1, (self.hparams.horizon, self.outputs_per_step))  # (B, H, Q)
        m = self.median_index
        median = out[..., m : m + 1]
        above = median + nn.functional.softplus(out[..., m + 1 :]).cumsum(-1)
        below = median - nn.functional.softplus(out[..., :m].flip(-1)).cumsum(-1).flip(-1)
        return torch.cat([below, median, above], dim=-1)

    def point(self, forecast: Tensor) -> Tensor:
        """The point forecast (B, H) of `to_forecast`'s output: the median of a quantile head."""
        return forecast[..., self.median_index] if self.quantiles else forecast

    def forecast(self, x: Tensor) -> Tensor:
        """Windows (B, window, features) -> point forecasts (B, H) or ordered quantiles (B, H, Q), scaled units."""
        return self.to_forecast(self(x))

    def prices(self, forecast: Tensor, last: Tensor, ticker: Tensor,
               to_price: Callable[[Tensor, Tensor, Tensor], Tensor]) -> tuple[Tensor, Tensor | None]:
        """`to_forecast`'s output in prices, for windows whose last price is `last` (B,) and ticker `ticker` (B,):
        the point forecast (B, H) and a quantile head's quantiles (B, H, Q) or None. `to_price` (the data module's)
        is increasing, so the quantiles stay ordered."""
        quantiles = to_price(forecast.flatten(1), last, ticker).view_as(forecast) if self.quantiles else None
        return to_price(self.point(forecast), last, ticker), quantiles

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """MSE of a point forecast, or the pinball loss of a quantile head, on forward's output and targets (B, H)."""
        if self.quantiles:
            return pinball_loss(self.to_forecast(out), y, self.quantiles)
        return self.loss_fn(out, y)

    @property
    def num_parameters(self) -> int:
        """Trainable parameters (Keras init freezes nn.LSTM's duplicate bias: it is not a parameter in Keras)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch.x, batch.y
        loss = self.loss(self.training_forward(x, y), y)
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
        out = self.forward_batch(batch.x, batch.ticker, self.trainer.datamodule.tickers)
        self.val_loss.update(self.loss(out, batch.y), len(out))
        y_hat = self.point(self.to_forecast(out))
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
        out = self.forward_batch(batch.x, batch.ticker, self.trainer.datamodule.tickers)
        self.log("test/loss", self.loss(out, batch.y), batch_size=len(out), sync_dist=True)
        # float64 prices: the true ones from the data, not a float32 round trip through the scaler
        pred, quantiles = self.prices(self.to_forecast(out), batch.last, batch.ticker,
                                     self.trainer.datamodule.to_price)
        self._test_batches.append((pred, batch.actual, batch.last, batch.ticker, quantiles))

    def on_test_epoch_start(self) -> None:
        self._test_batches.clear()
        self.test_forecasts = None
        datamodule = getattr(self.trainer, "datamodule", None)  # the tested weights' validation errors
        self._calibration = self.validation_errors(datamodule) if datamodule is not None else None

    @torch.no_grad()
    def validation_errors(self, datamodule: L.LightningDataModule) -> tuple[Tensor, Tensor, Tensor] | None:
        """Price errors (N, H) of the point forecast and of persistence on the validation windows, and each window's
        ticker (N,): the calibration set of split-conformal intervals (never trained on); None without one."""
        dataset = datamodule.datasets.get("val")
        if dataset is None or len(dataset) == 0:
            return None
        model_errors, persistence_errors, tickers = [], [], []
        for batch in datamodule.val_dataloader():
            batch = Batch(*(t.to(self.device) for t in batch))  # float64 prices
            forecast = self.to_forecast(self.forward_batch(batch.x, batch.ticker, datamodule.tickers))
            point = self.prices(forecast, batch.last, batch.ticker, datamodule.to_price)[0]
            model_errors.append(batch.actual - point)
            persistence_errors.append(batch.actual - persistence_forecast(batch.last, batch.actual.shape[1]))
            tickers.append(batch.ticker)
        return torch.cat(model_errors), torch.cat(persistence_errors), torch.cat(tickers)

    def on_test_epoch_end(self) -> None:
        """Collect the test period's forecasts; scoring them is lstm_zoo.evaluation's."""
        pred, actual, last, ticker, quantiles = zip(*self._test_batches)
        self._test_batches.clear()
        self.test_forecasts = TestForecasts(
            pred=torch.cat(pred), actual=torch.cat(actual), last=torch.cat(last), ticker=torch.cat(ticker),
            quantiles=(self.quantiles, torch.cat(quantiles)) if self.quantiles else None,
            calibration=self._calibration, interval_levels=self.interval_levels)

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
