"""End to end: run(cfg) and `python train.py` produce a checkpoint, TensorBoard events, metrics and plots."""

from __future__ import annotations

import json
import logging
import math

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONF, FAST, compose_train
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lstm_zoo.build import DropLightningNoise
from lstm_zoo.evaluation.report import experiment_hparams
from lstm_zoo.models import RNNForecaster
from lstm_zoo.pipeline import run
from tests.helpers import PLOT, run_main


def tensorboard_tags(log_dir) -> set[str]:
    """Every tag TensorBoard would show for a run folder (scalars, images and hparams are all tensors here)."""
    tags: set[str] = set()
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
        acc.Reload()
        tags |= set(acc.Tags()["tensors"])
    return tags


def test_run_writes_every_output_of_a_training_run(fast_cfg, tmp_path):
    metrics = run(fast_cfg("trainer.max_epochs=2", PLOT))
    out = tmp_path / "run"
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    for key in ("test/rmse", "test/mae", "test/mape", "test/persistence_rmse", "val/rmse", "train_seconds"):
        assert math.isfinite(metrics[key]), key
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test/rmse"] == pytest.approx(metrics["test/rmse"])
    assert saved["num_parameters"] == metrics["num_parameters"] > 0

    predictions = pd.read_csv(out / "predictions.csv", parse_dates=["date"])
    assert list(predictions.columns) == ["date", "ticker", "actual", "predicted", "persistence", "lower_80",
                                         "upper_80", "lower_95", "upper_95"]  # split-conformal bands, interval_levels
    assert set(predictions["ticker"]) == {"IBM"}  # the Name column of the synthetic file
    assert predictions["date"].min() >= pd.Timestamp("2022-01-01") and predictions["date"].is_unique
    rmse = ((predictions["predicted"] - predictions["actual"]) ** 2).mean() ** 0.5
    assert rmse == pytest.approx(metrics["test/rmse"], rel=1e-12)  # the CSV holds what the metrics were computed on
    persistence = ((predictions["persistence"] - predictions["actual"]) ** 2).mean() ** 0.5
    assert persistence == pytest.approx(metrics["test/persistence_rmse"], rel=1e-12)  # float64 all the way

    assert (out / "forecast.png").stat().st_size > 10_000
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)  # plain values only
    assert checkpoint["hyper_parameters"]["hidden_size"] == 8
    expected = {"train/loss_epoch", "val/loss", "val/rmse", "test/rmse", "hp/test_rmse", "test/forecast",
                "_hparams_/session_start_info"}
    assert expected <= tensorboard_tags(out / "tensorboard")


def logged_hparams(log_dir) -> set[str]:
    """The hyper-parameter names of TensorBoard's HPARAMS tab for a run folder's events."""
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
        acc.Reload()
        if "_hparams_/session_start_info" in acc.Tags()["tensors"]:
            content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
            return set(plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams)
    raise AssertionError(f"no hparams in {log_dir}")


def test_hparams_tab_lists_the_fields_that_define_an_experiment_only(fast_cfg, tmp_path):
    run(fast_cfg("model=gru", "optimizer=adam", "scheduler=cosine"))
    names = logged_hparams(tmp_path / "run" / "tensorboard")
    assert {"experiment", "Model", "optimizer", "scheduler", "Seed", "trainer/max_epochs", "trainer/precision",
            "model/hidden_size", "model/num_layers", "model/dropout", "model/init", "model/cell",
            "model/optimizer/lr", "model/scheduler/T_max", "model/num_parameters", "data/window", "data/features",
            "data/target", "data/target_transform", "data/train_end", "data/batch_size"} <= names
    noise = [n for n in names if n.split("/")[0] in ("callbacks", "logger", "hydra", "output_dir", "ckpt_path")
             or n.startswith("trainer/") and n not in ("trainer/max_epochs", "trainer/precision")
             or n.endswith(("_target_", "_partial_"))]
    assert noise == []
    # no per-run experiment summary: TensorBoard builds one from all runs and lists the differing values first
    assert "_hparams_/experiment" not in tensorboard_tags(tmp_path / "run" / "tensorboard")
    assert sorted(names)[:2] == ["Model", "Seed"]  # TensorBoard's order among fields that differ: by name


def test_hparams_of_a_sweep_job_list_model_seed_and_the_swept_fields_first(prices_csv) -> None:
    cfg = compose_train(["data=csv", f"data.path={prices_csv}", "data.window=10"])
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hydra_cfg = compose("train", overrides=["data.target_transform=diff", "seed=1"], return_hydra_config=True)
    hydra_cfg.hydra.mode = RunMode.MULTIRUN
    hydra_cfg.hydra.overrides.task = ["data.target_transform=diff", "seed=1"]
    HydraConfig.instance().set_config(hydra_cfg)
    try:
        names = sorted(experiment_hparams(cfg, RNNForecaster(hidden_size=4, num_layers=1, window=10)))
    finally:
        HydraConfig.instance().cfg = None
    assert names[:3] == ["Data/target_transform", "Model", "Seed"]
    assert "data/target_transform" not in names and "data/window" in names


def test_console_shows_no_cloud_logger_tip_and_no_flops_but_keeps_warnings(fast_cfg, caplog, capsys):
    with caplog.at_level("INFO"):
        run(fast_cfg("trainer.enable_model_summary=true", "trainer.limit_train_batches=2"))
    shown = caplog.text + capsys.readouterr().out
    assert "[litlogger]" not in shown and "FLOPs" not in shown and "Skipping setting a default" not in shown
    assert "trainable parameters" in caplog.text  # the model summary itself is still there
    noise = DropLightningNoise()
    tip = logging.LogRecord("lightning", logging.INFO, __file__, 1, "try installing [litlogger]", None, None)
    warning = logging.LogRecord("lightning", logging.WARNING, __file__, 1, "litlogger failed to start", None, None)
    assert not noise.filter(tip) and noise.filter(warning)


def test_train_loss_reaches_tensorboard_every_log_every_n_steps_and_every_epoch(prices_csv, tmp_path):
    """The step loss is logged only on the steps Lightning writes (log_every_n_steps), and the value written at a
    step is that step's batch loss; the epoch mean is written once per epoch."""
    class BatchLosses(L.Callback):
        def __init__(self) -> None:
            self.losses: list[float] = []
            self.sizes: list[int] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.losses.append(outputs["loss"].item())
            self.sizes.append(len(batch[0]))

    dm = instantiate(compose_train(["data=csv", f"data.path={prices_csv}", "data.window=10"]).data)
    model = RNNForecaster(hidden_size=4, num_layers=1, window=10)
    recorder = BatchLosses()
    trainer = L.Trainer(max_epochs=2, log_every_n_steps=3, callbacks=[recorder], enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False,
                        logger=L.pytorch.loggers.TensorBoardLogger(tmp_path, name="tb"))
    trainer.fit(model, datamodule=dm)
    values: dict[str, dict[int, float]] = {}
    for events in (tmp_path / "tb").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
        acc.Reload()
        for tag in set(acc.Tags()["tensors"]) & {"train/loss_step", "train/loss_epoch"}:
            values.setdefault(tag, {}).update({e.step: float(e.tensor_proto.float_val[0]) for e in acc.Tensors(tag)})
    written = values["train/loss_step"]
    assert sorted(written) == [k for k in range(len(recorder.losses)) if (k + 1) % 3 == 0]
    assert all(written[k] == pytest.approx(recorder.losses[k], rel=1e-6) for k in written)
    per_epoch = len(recorder.losses) // 2
    for epoch, step in enumerate(sorted(values["train/loss_epoch"])):  # the batch-size-weighted mean of the epoch
        losses, sizes = (v[epoch * per_epoch : (epoch + 1) * per_epoch] for v in (recorder.losses, recorder.sizes))
        mean = sum(loss * size for loss, size in zip(losses, sizes)) / sum(sizes)
        assert values["train/loss_epoch"][step] == pytest.approx(mean, rel=1e-5)
    assert len(values["train/loss_epoch"]) == 2


def test_persistence_is_scored_on_the_same_days_as_the_model(fast_cfg, tmp_path):
    metrics = run(fast_cfg("data.horizon=3"))
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert {"actual_t+3", "predicted_t+3"} <= set(predictions.columns)
    assert math.isfinite(metrics["test/rmse_step3"]) and math.isfinite(metrics["test/persistence_rmse_step1"])
    # persistence repeats the last known value: its step-1 forecast of day t+1 is day t's actual
    np.testing.assert_allclose(predictions["persistence"].iloc[1:], predictions["actual"].iloc[:-1], rtol=1e-5)


@pytest.mark.slow
def test_train_py_prints_the_model_beside_persistence(prices_csv, tmp_path):
    result = run_main("train.py", ["data=csv", f"data.path={prices_csv}", *FAST, f"hydra.run.dir={tmp_path}/single"])
    assert result.returncode == 0, result.stdout[-3000:]
    assert "persistence" in result.stdout and "RMSE" in result.stdout
    assert (tmp_path / "single" / ".hydra" / "config.yaml").exists()
    assert json.loads((tmp_path / "single" / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_multirun_puts_each_model_in_its_own_folder(real_sweep):
    runs = sorted(p.parent.name for p in real_sweep.glob("*/metrics.json"))  # model=vanilla,gru x seed=1,2
    assert len(runs) == 4
    assert runs[0].startswith("0_") and "model-vanilla" in runs[0] and "model-vanilla" in runs[1]
    assert runs[2].startswith("2_") and "model-gru" in runs[2] and "model-gru" in runs[3]
    for name in runs:
        run_dir = real_sweep / name
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
        assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
        assert (run_dir / "checkpoints" / "last.ckpt").exists()


def test_last_ckpt_holds_the_final_epoch_even_when_it_is_not_the_best(fast_cfg, tmp_path):
    # lr so small that the weights never change: val/loss never improves after epoch 0, so the best is epoch 0
    run(fast_cfg("trainer.max_epochs=3", "model.optimizer.lr=1e-30", "model.dropout=0.0"))
    checkpoints = tmp_path / "run" / "checkpoints"
    best = [p.name for p in checkpoints.glob("epoch*.ckpt")]
    assert best == [next(iter(best))] and best[0].startswith("epoch00")
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 3 * 4  # debug=fast: 4 training batches per epoch
