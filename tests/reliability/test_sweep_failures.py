"""Sweeps and runs of several processes at once: a killed joblib worker costs one job; runs never share a folder.

The slow tests here start several training processes at once, so this file's tests run one after the other on one
pytest-xdist worker (tests/xdist_groups.py: the multiprocess group); sweeps whose jobs fail in one process are
test_failed_sweep_jobs.py."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FAST, compose_train, write_prices_csv

from lstm_zoo.pipeline import run
from tests.helpers import cli, read_metrics


@pytest.fixture
def csv_args(tmp_path: Path) -> list[str]:
    return ["data=csv", f"data.path={write_prices_csv(tmp_path / 'p.csv')}", *FAST]


def test_main_never_returns_nan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """optuna 2.10 crashes the whole study on a NaN objective; main raises instead, which fails one trial."""
    import lstm_zoo.pipeline  # train.main imports its run from here when it runs
    import train

    cfg = compose_train([], tmp_path)
    for metrics in ({"val/rmse": math.nan}, {"val/rmse": math.inf}, {}):
        monkeypatch.setattr(lstm_zoo.pipeline, "run", lambda cfg, metrics=metrics: metrics)
        with pytest.raises(FloatingPointError, match="nothing to optimize"):
            train.main.__wrapped__(cfg)
    monkeypatch.setattr(lstm_zoo.pipeline, "run", lambda cfg: {"val/rmse": 1.5})
    assert train.main.__wrapped__(cfg) == 1.5


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path: Path, csv_args: list[str]) -> None:
    from reliability_helpers import HERE, ROOT

    command = [sys.executable, str(ROOT / "train.py"), *csv_args, "trainer.max_epochs=1",
               "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "test=false"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{HERE}"}
    procs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
             for _ in range(2)]
    assert [p.wait(timeout=240) for p in procs] == [0, 0]
    runs = list((tmp_path / "outputs" / "runs").iterdir())
    hydra_conf = yaml.safe_load((ROOT / "conf" / "hydra" / "default.yaml").read_text())
    assert "%f" in hydra_conf["run"]["dir"] and "%f" in hydra_conf["sweep"]["dir"]  # microseconds in the names
    assert len(runs) == 2 and all((r / "metrics.json").is_file() for r in runs)


@pytest.mark.skipif(not (Path(__file__).parents[2] / "conf" / "hparams_search" / "optuna.yaml").exists(),
                    reason="no conf/hparams_search/optuna.yaml on this branch")
def test_optuna_config_survives_one_failed_trial() -> None:
    """The plugin compares failures per batch of n_jobs trials with max_failure_rate: one failure must pass."""
    conf = yaml.safe_load((Path(__file__).parents[2] / "conf" / "hparams_search" / "optuna.yaml").read_text())
    sweeper = conf["hydra"]["sweeper"]
    assert 1 / sweeper.get("n_jobs", 2) <= sweeper.get("max_failure_rate", 0.0), (
        "one diverged trial would end the study: set max_failure_rate to 1.0 (it is per batch of n_jobs trials)")


@pytest.mark.slow
def test_a_killed_joblib_worker_costs_one_job_and_the_same_command_finishes_the_sweep(
        tmp_path: Path, csv_args: list[str]) -> None:
    """hydra/launcher=joblib, 3 jobs on 2 workers. The worker running seed=1 is SIGKILLed in epoch 1, and again when
    that job runs alone (as a job that always runs out of memory would be): the sweep goes on and records it as
    failed; the same command then resumes it. Every job ends with the metrics of the job never interrupted."""
    sweep, jobs = tmp_path / "sweep", [*csv_args, "trainer.max_epochs=2", "trainer.limit_train_batches=2"]
    command = ["-m", *jobs, "seed=0,1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
               f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}",
               "+callbacks.kill._target_=reliability_helpers.KillAt", f"+callbacks.kill.marks={tmp_path / 'marks'}",
               "+callbacks.kill.instants=[batch:1:0]", "+callbacks.kill.times=2", "+callbacks.kill.seed=${seed}",
               "+callbacks.kill.only_seed=1"]
    one_thread = {"OMP_NUM_THREADS": "1"}  # what each worker gets; the reference runs below use the same

    first = cli("train.py", command, tmp_path, timeout=400, env=one_thread)
    assert first.returncode == 1, first.stdout[-3000:]
    assert "A worker process was killed (SIGKILL" in first.stdout and len(list((tmp_path / "marks").iterdir())) == 2
    assert [read_metrics(sweep / str(n))["status"] for n in range(3)] == ["completed", "failed", "completed"]
    assert read_metrics(sweep / "1")["error"].startswith("WorkerKilledError: job #1: its process was killed (SIGKILL)")

    second = cli("train.py", command, tmp_path, timeout=400, env=one_thread)
    assert second.returncode == 0, second.stdout[-3000:]
    assert second.stdout.count("holds a completed run of this configuration") == 2
    assert "resuming this configuration's failed run" in second.stdout

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the uninterrupted sweep: the same jobs, each in one go
        reference = [run(compose_train([*jobs, f"seed={seed}"], tmp_path / f"reference_{seed}")) for seed in range(3)]
    finally:
        torch.set_num_threads(threads)
    for number, expected in enumerate(reference):
        metrics = read_metrics(sweep / str(number))
        assert metrics["status"] == "completed"
        assert {k: metrics[k] for k in expected if k.startswith(("val/", "test/"))} == \
            {k: v for k, v in expected.items() if k.startswith(("val/", "test/"))}, number
