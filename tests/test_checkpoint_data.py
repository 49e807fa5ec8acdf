"""eval.py / predict.py on a run: the data it was trained on, the weights it published, held-out calibration only."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from lstm_zoo.checkpoints import checkpoint_file
from lstm_zoo.errors import ConfigError
from lstm_zoo.forecasting import predict
from lstm_zoo.pipeline import evaluate, run
from tests.conftest import compose_entry, write_prices_csv

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def test_a_run_folder_means_the_data_and_the_weights_the_run_published(fast_cfg, prices_csv, tmp_path, caplog):
    """No data.* given: eval/predict read the run's CSV (not the embedded IBM data) with its best checkpoint (not
    last.ckpt), so eval reproduces metrics.json's test metrics to the digit; an override is honoured and said."""
    run(fast_cfg("trainer.max_epochs=4", "model.optimizer.lr=0.02", "model.init=torch", "model.num_layers=4",
                 "trainer.limit_train_batches=null"))  # last epoch worse (as in the best-epoch test)
    folder = tmp_path / "run"
    published = json.loads((folder / "metrics.json").read_text())
    best = Path(published["best_checkpoint"])
    assert published["tested_weights"] == "best" and best.name != "last.ckpt"
    weights = [torch.load(p, weights_only=True)["state_dict"] for p in (best, folder / "checkpoints" / "last.ckpt")]
    assert any(not torch.equal(a, b) for a, b in zip(weights[0].values(), weights[1].values()))
    assert checkpoint_file(str(folder)) == str(folder / "checkpoints" / best.name)  # not last.ckpt

    evaluate(compose_entry("eval", [f"ckpt_path={folder}", *QUIET], tmp_path / "eval"))
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    test_keys = [k for k in published if k.startswith("test/")]
    assert test_keys and {k: scored[k] for k in test_keys} == {k: published[k] for k in test_keys}
    assert scored["intervals"] == published["intervals"] and scored["test_end"] == "2022-12-30"

    frame = predict(compose_entry("predict", [f"ckpt_path={folder}", "calendar=null"], tmp_path / "predict"))
    prices = pd.read_csv(prices_csv)
    assert frame["date"].astype(str).tolist() == ["2023-01-02"]  # the weekday after the CSV's last day, 2022-12-30
    assert frame["persistence"][0] == prices["High"].iloc[-1] and "lower_80" in frame

    prices.iloc[: prices.index[prices["Date"] == "2022-06-15"][0] + 1].to_csv(tmp_path / "cut.csv", index=False)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lstm_zoo.checkpoints"):
        frame = predict(compose_entry("predict", [f"ckpt_path={folder}", f"data.path={tmp_path}/cut.csv",
                                                  "calendar=null"], tmp_path / "predict_cut"))
    assert frame["date"].astype(str).tolist() == ["2022-06-16"]
    said = [r.getMessage() for r in caplog.records if "from the command line" in r.getMessage()]
    assert len(said) == 1 and f"data.path={tmp_path}/cut.csv (the checkpoint's: {prices_csv})" in said[0]


def test_a_field_the_weights_fix_is_an_error_and_another_ticker_a_warning(fast_cfg, prices_csv, tmp_path):
    run(fast_cfg())
    ckpt = f"ckpt_path={tmp_path / 'run'}"
    with pytest.raises(ConfigError, match=r"data\.horizon=5 differs from .*'s data\.horizon=1, which its trained "
                                          r"weights fix\. Fix: drop data\.horizon"):
        predict(compose_entry("predict", [ckpt, "data.horizon=5"], tmp_path / "predict"))
    with pytest.raises(ConfigError, match=r"data\.window=60 differs from .*data\.window=10"):
        evaluate(compose_entry("eval", [ckpt, "data.window=60", *QUIET], tmp_path / "eval"))
    other = write_prices_csv(tmp_path / "ko.csv", seed=3, name="KO")
    with pytest.warns(UserWarning, match=r"KO is scaled with the scaler fit on IBM, the series the model was trained"):
        predict(compose_entry("predict", [ckpt, f"data.path={other}", "calendar=null"], tmp_path / "predict_ko"))


def test_a_model_trained_without_validation_set_gets_no_in_sample_intervals(fast_cfg, tmp_path, capsys):
    """data.val_fraction=0: every window before the test period was trained on, so none may calibrate intervals;
    not even when eval/predict are given a data.val_fraction (those windows were trained on too)."""
    run(fast_cfg("data.val_fraction=0", "test_checkpoint=last", "~callbacks.checkpoint"))
    ckpt = f"ckpt_path={tmp_path / 'run'}"
    for extra in ([], ["data.val_fraction=0.1"]):
        metrics = evaluate(compose_entry("eval", [ckpt, *extra, *QUIET], tmp_path / f"eval{len(extra)}"))
        assert metrics["intervals"].startswith("none: ") and not any("coverage" in k for k in metrics)
        assert not any(c.startswith("lower") for c in pd.read_csv(tmp_path / f"eval{len(extra)}" / "predictions.csv"))
        capsys.readouterr()
        frame = predict(compose_entry("predict", [ckpt, *extra], tmp_path / f"predict{len(extra)}"))
        assert list(frame.columns) == ["date", "ticker", "step", "forecast", "persistence"]
        assert "Intervals: none: " in capsys.readouterr().out
    assert "the model trained on all" in metrics["intervals"] and "never saw" in metrics["intervals"]
