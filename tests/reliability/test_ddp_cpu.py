"""`trainer=ddp` on 2 CPU processes (gloo): one run folder, rank-0 files, whole-test-set metrics, no hangs.

DDP re-executes `sys.argv`, so each test that trains runs `python train.py` in its own process group with a timeout.
Every model kind trains under DDP's gradient sync once: nn.LSTM (stacked) and sLSTM's custom autograd function in
the test of the whole test set (popen, 2 epochs), minLSTM's custom autograd function in the ddp_spawn multirun.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FAST, write_prices_csv

from lstm_zoo.data import StockDataModule
from lstm_zoo.evaluation.metrics import mae, rmse
from tests.helpers import cli, fast, read_metrics, run_main

# two processes, two epochs; the runs are FAST / fast(model): 4 training batches an epoch per process, 1 layer of 8
DDP = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.max_epochs=2"]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["stacked", "slstm"])  # nn.LSTM, a custom autograd function (min_lstm: below)
def test_ddp_run_writes_one_folder_and_tests_the_whole_test_set(tmp_path: Path, model: str) -> None:
    csv = write_prices_csv(tmp_path / "p.csv")
    result = cli("train.py", [*DDP, *fast(model), "data=csv", f"data.path={csv}"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(runs) == 1, runs  # rank 1 ran inside rank 0's folder, not a second one
    run = runs[0]
    assert not (tmp_path / "outputs" / "multirun").exists() and not (tmp_path / "lightning_logs").exists()
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and len({e.name.split(".")[-2] for e in events}) == 1  # all written by one process (rank 0)
    assert [p.name for p in (run / "tensorboard").iterdir() if p.is_dir()] == []
    metrics = read_metrics(run)
    assert metrics["status"] == "completed" and metrics["epochs"] == 2

    # every test window exactly once: the persistence baseline depends on the data only, so it must equal a
    # single-process computation over the whole test period (DistributedSampler would split and pad it)
    dm = StockDataModule(path=str(csv), window=10)
    dm.setup()
    test = dm.datasets["test"]
    actual = dm.to_price(test.y, test.last)
    persistence = test.last.unsqueeze(1).double().numpy()
    assert metrics["test/persistence_rmse"] == pytest.approx(rmse(persistence, actual.double().numpy()), rel=1e-6)
    assert metrics["test/persistence_mae"] == pytest.approx(mae(persistence, actual.double().numpy()), rel=1e-6)
    predictions = (run / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 1 + len(test)
    assert torch.isfinite(torch.tensor(metrics["test/rmse"]))


@pytest.mark.slow
def test_ddp_run_ends_when_one_rank_fails(tmp_path: Path) -> None:
    csv = write_prices_csv(tmp_path / "p.csv")
    result = cli("train.py", [*DDP, "data=csv", f"data.path={csv}", *FAST, f"hydra.run.dir={tmp_path / 'run'}",
                        "+callbacks.fail._target_=reliability_helpers.RaiseOnRank"], tmp_path, timeout=300)
    assert result.returncode != 0
    assert "injected failure on rank 1" in result.stdout
    assert read_metrics(tmp_path / "run")["status"] == "failed"


@pytest.mark.slow
def test_ddp_in_a_multirun_is_refused_clearly(tmp_path: Path) -> None:
    csv = write_prices_csv(tmp_path / "p.csv")
    result = run_main("train.py", ["-m", *DDP, "data=csv", f"data.path={csv}", *FAST, "seed=1,2",
                                   f"hydra.sweep.dir={tmp_path / 'sweep'}"], tmp_path)  # refused before any training
    assert result.returncode == 1
    assert result.stdout.count("[ERROR] - ConfigError: trainer=ddp cannot run inside a multirun") == 2
    assert not list((tmp_path / "sweep").glob("*/checkpoints"))


@pytest.mark.slow
def test_ddp_spawn_works_in_a_multirun(tmp_path: Path) -> None:
    """model=min_lstm: its custom autograd function trains under DDP here (the other models: above)."""
    csv = write_prices_csv(tmp_path / "p.csv")
    result = cli("train.py", ["-m", *DDP, "trainer.max_epochs=1", "trainer.strategy.start_method=spawn", "data=csv",
                              f"data.path={csv}", *fast("min_lstm"), "seed=1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                              "hydra.sweep.subdir=${hydra.job.num}"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    jobs = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]
    metrics = read_metrics(jobs[0])
    assert len(jobs) == 1 and metrics["status"] == "completed"
    last = torch.load(jobs[0] / "checkpoints" / "last.ckpt", weights_only=True)  # written by rank 0, a spawned child
    assert last["hyper_parameters"]["cell"] == "min_lstm" and last["global_step"] > 0  # it trained, under DDP
    # the spawned ranks trained, not this (parent) process: metrics.json still counts their epoch, steps and time
    assert metrics["epochs"] == 1 and metrics["optimizer_steps"] == last["global_step"]
    assert len(metrics["timing"]["epochs"]) == 1 and metrics["timing"]["train"] > 0
