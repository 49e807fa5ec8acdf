"""Seed ensembles: the mean test forecast of runs of one configuration, a predictions frame scored like a run's."""

from __future__ import annotations

import pandas as pd

from lstm_zoo.evaluation.metrics import METRICS, format_pvalue, score, step_columns


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


ENSEMBLE = ["runs", "val_rmse", "val_skill", "skill_per_seed", "dm_p_per_seed",
            *(f"ensemble_{m.name}" for m in METRICS), "ensemble_persistence_rmse"]


def seed_ensembles(done: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of two or more runs with predictions: the mean forecast over its seeds scored like a single run
    (ensemble_<metric>), beside the seeds' own skill and DM p and their validation RMSE and skill (means)."""
    rows = {}
    for key, group in done.groupby(by, dropna=False):
        group = group[group["predictions"].notna()]
        if len(group) > 1:
            scores = score(ensemble_predictions([pd.read_csv(p) for p in group["predictions"]]))
            rows[key] = {"runs": len(group), "val_rmse": group["val/rmse"].mean(),
                         "val_skill": (1 - group["val/rmse"] / group["val/persistence_rmse"]).mean(),
                         "skill_per_seed": " ".join(f"{v:+.4f}" for v in group["test/skill"]),
                         "dm_p_per_seed": " ".join(format_pvalue(v) for v in group["test/dm_pvalue"]),
                         **{f"ensemble_{m.name}": scores[m.name] for m in METRICS},
                         "ensemble_persistence_rmse": scores["persistence_rmse"]}
    index = pd.MultiIndex.from_tuples([k if isinstance(k, tuple) else (k,) for k in rows], names=by)
    index = index if len(by) > 1 else index.get_level_values(0)
    return pd.DataFrame(list(rows.values()), index=index, columns=ENSEMBLE)
