"""Training faults: a diverging run stops with a clear error and never picks a NaN checkpoint; seeds reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_train, write_prices_csv
from reliability_helpers import TINY, PoisonWeights

from lstm_zoo.errors import CheckpointError
from lstm_zoo.pipeline import run
from tests.helpers import read_metrics


def test_huge_learning_rate_stops_with_a_clear_error(fast_cfg, tmp_path: Path) -> None:
    with pytest.raises(FloatingPointError, match=r"training loss is (nan|inf) at epoch 0, step \d+ \(lr=1e\+30\)"):
        run(fast_cfg("model.optimizer.lr=1e30"))
    metrics = read_metrics(tmp_path / "run")
    assert metrics["status"] == "failed"
    assert metrics["error"].startswith("FloatingPointError: training loss is") and "Fix" in metrics["error"]
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))  # diverged before any epoch ended


def test_nan_validation_loss_fails_the_run_and_is_never_best(fast_cfg, tmp_path: Path) -> None:
    """Weights turn NaN in the last epoch: ModelCheckpoint sees NaN (as inf); the run must fail, best stays finite."""
    cfg = fast_cfg("trainer.max_epochs=2", "+callbacks.poison._target_=reliability_helpers.PoisonWeights",
                   "+callbacks.poison.epoch=1")
    with pytest.raises(FloatingPointError, match=r"validation loss is nan after epoch 2: the run diverged"):
        run(cfg)
    assert read_metrics(tmp_path / "run")["status"] == "failed"
    best = [p for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert [p.name[:7] for p in best] == ["epoch00"]
    state = torch.load(best[0], weights_only=True)["state_dict"]
    assert all(torch.isfinite(t).all() for t in state.values())
    assert PoisonWeights  # used through its import path above


def test_same_seed_twice_gives_identical_metrics(tmp_path: Path) -> None:
    csv = write_prices_csv(tmp_path / "p.csv")
    results = []
    for name in ("a", "b"):
        run(compose_train(["data=csv", f"data.path={csv}", *TINY, "trainer.max_epochs=2", "seed=7"], tmp_path / name))
        metrics = read_metrics(tmp_path / name)
        machine = ("train_seconds", "best_checkpoint", "process", "timing")  # when and where, not what
        results.append({k: v for k, v in metrics.items() if k not in machine})
    assert results[0]["status"] == "completed" and "test/rmse" in results[0]
    assert json.dumps(results[0], sort_keys=True) == json.dumps(results[1], sort_keys=True)
    assert (tmp_path / "a" / "predictions.csv").read_text() == (tmp_path / "b" / "predictions.csv").read_text()


def test_resume_from_a_missing_checkpoint_fails_clearly(fast_cfg, tmp_path: Path) -> None:
    missing = tmp_path / "old_run"
    with pytest.raises(CheckpointError, match=f"ckpt_path: no checkpoint at {missing}.*Fix"):
        run(fast_cfg(f"ckpt_path={missing}"))
    assert read_metrics(tmp_path / "run")["error"].startswith("CheckpointError: ")
