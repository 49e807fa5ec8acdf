"""Forecast metrics in price units, for a model and for the persistence baseline on the same days."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional import mean_absolute_error, mean_absolute_percentage_error, mean_squared_error


def persistence_forecast(last: Tensor, horizon: int) -> Tensor:
    """'Tomorrow = today': repeat the last known value for every step ahead, (B,) -> (B, H)."""
    return last.unsqueeze(1).expand(-1, horizon)


def forecast_metrics(pred: Tensor, actual: Tensor) -> dict[str, float]:
    """RMSE, MAE and MAPE (in %) over all steps ahead, and RMSE per step ahead when there are several.

    MAPE is NaN (reported as undefined) when an actual price is zero, instead of torchmetrics' epsilon blow-up.
    """
    pred, actual = pred.double(), actual.double()
    defined = bool((actual != 0).all())
    metrics = {
        "rmse": mean_squared_error(pred, actual, squared=False).item(),
        "mae": mean_absolute_error(pred, actual).item(),
        "mape": 100 * mean_absolute_percentage_error(pred, actual).item() if defined else float("nan"),
    }
    if pred.shape[1] > 1:
        for step in range(pred.shape[1]):
            metrics[f"rmse_step{step + 1}"] = mean_squared_error(pred[:, step], actual[:, step], squared=False).item()
    return metrics


def all_finite(metrics: dict[str, float]) -> bool:
    return all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k != "mape")
