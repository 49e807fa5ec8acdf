"""Seed ensembles: the mean test forecast of runs of one configuration, a predictions frame scored like a run's."""

from __future__ import annotations

import pandas as pd

from lstm_zoo.evaluation.metrics import step_columns


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

