"""Seed ensembles: average the test predictions of runs of one configuration, and score any predictions.csv."""

from __future__ import annotations

import pandas as pd
import torch

from lstm_zoo.evaluation.metrics import compare_with_persistence, forecast_metrics


def step_columns(frame: pd.DataFrame, name: str) -> list[str]:
    """The columns of `name` for every step ahead: actual, actual_t+2, ... (predictions.csv layout)."""
    return [name] + [c for c in frame.columns if c.startswith(f"{name}_t+")]


def ensemble_predictions(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The mean forecast of several runs' predictions.csv frames, which must cover the same days and actuals."""
    if not frames:
        raise ValueError("ensemble_predictions needs at least one predictions frame")
    first = frames[0]
    keys = [c for c in ("date", "ticker") if c in first]
    for i, frame in enumerate(frames[1:], start=1):
        same = (len(frame) == len(first) and set(keys) <= set(frame.columns)
                and (frame[keys].astype(str).to_numpy() == first[keys].astype(str).to_numpy()).all()
                and (frame[step_columns(first, "actual")].to_numpy() == first[step_columns(first, "actual")]
                     .to_numpy()).all())
        if not same:
            raise ValueError(f"predictions frame {i} covers other days or other actual prices than frame 0: "
                             "only runs on the same data, split and target can be averaged.")
    # one run's interval bounds are not the ensemble's: leave them out (intervals of an ensemble are not defined here)
    ensemble = first.drop(columns=[c for c in first.columns if c.startswith(("lower_", "upper_"))])
    predicted = step_columns(first, "predicted")
    ensemble[predicted] = sum(frame[predicted].to_numpy(dtype=float) for frame in frames) / len(frames)
    return ensemble


def predictions_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """test/* metrics of a predictions.csv frame, the same keys as the run's metrics.json."""
    actual = torch.tensor(frame[step_columns(frame, "actual")].to_numpy(dtype=float))  # (T, H)
    pred = torch.tensor(frame[step_columns(frame, "predicted")].to_numpy(dtype=float))
    last = torch.tensor(frame["persistence"].to_numpy(dtype=float))  # persistence = the last known value
    persistence = last.unsqueeze(1).expand_as(actual)
    metrics = {f"test/{k}": v for k, v in forecast_metrics(pred, actual).items()}
    metrics.update({f"test/persistence_{k}": v for k, v in forecast_metrics(persistence, actual).items()})
    metrics.update({f"test/{k}": v for k, v in compare_with_persistence(pred, actual, last).items()})
    return metrics
