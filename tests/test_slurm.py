"""The walk-forward study on a real (throwaway, single-node) SLURM cluster: hydra/launcher=slurm_cpu sweeps,
pooling, pre-emption with requeue, a job killed by its time limit, and what the job logs show.

Skipped where slurmctld is not installed (apt-get install -y slurm-wlm munge; .ci/run does it). `-m slurm` selects
them; they share one cluster, so keep them on one worker (pytest-xdist: --dist loadgroup). The scenarios overlap
in that cluster: the time-limit scenario's first sweep, which waits a minute or two for SLURM's time limit, starts
in the background as soon as the cluster is up and runs while the other tests do (its own test comes last).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from lstm_zoo.evaluation import compare
from tests.conftest import FAST, ROOT, write_prices_csv
from tests.helpers import run_main
from tests.slurm_cluster import SlurmCluster, missing

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.xdist_group("slurm")]

QUIET_OFF = [*FAST, "trainer.enable_progress_bar=true"]  # the progress bar as configured by default: on
# one CPU and little memory per job: the test node declares 8 (tests/slurm_cluster.py), so jobs run side by side
SLURM = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
         "hydra.launcher.timeout_min=10"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    reason = missing()
    if reason:
        pytest.skip(f"no SLURM test cluster: {reason}")
    started = SlurmCluster().start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def study_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prices_csv(tmp_path_factory.mktemp("data") / "prices.csv", start="2018-01-01")


def environment(cluster: SlurmCluster) -> dict[str, str]:
    """The cluster's clients, and tests/reliability's callbacks (reliability_helpers.X) for its jobs."""
    return {**cluster.env, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "reliability")])}


def train(cluster: SlurmCluster, *overrides: str, background: bool = False):
    env = environment(cluster)
    command = [sys.executable, str(ROOT / "train.py"), "-m", *overrides]
    if background:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:] + cluster.logs()
    return result


# the time-limit scenario: two jobs under a 2-minute limit; the long one stalls in its second epoch (it sleeps, as
# a job that can never end in time, without using a CPU the other tests need). slurmctld checks time limits every
# 30 s and sends submitit's pre-timeout signal at the first check with fewer than signal_delay_s + 30 s left: the
# jobs get it 60 to 90 s after they start, which leaves the short job a minute to end
TIME_LIMITED = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                "hydra.launcher.timeout_min=2", "hydra.launcher.max_num_timeout=0", "hydra.launcher.signal_delay_s=30"]


@pytest.fixture(scope="module")
def time_limited(cluster: SlurmCluster, study_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """The time-limit scenario's first sweep, started in the background as soon as the cluster is up (the tests
    before its own use this fixture for that): (its sweep folder, its overrides, its process, its output file)."""
    sweep, output = tmp_path_factory.mktemp("limited") / "sweep", tmp_path_factory.mktemp("limited_output")
    jobs = ["model=vanilla", "data=csv", f"data.path={study_csv}", *FAST, "trainer.max_epochs=1,100000",
            "+callbacks.stall._target_=reliability_helpers.StallAt", "+callbacks.stall.epoch=1",
            *TIME_LIMITED, f"hydra.sweep.dir={sweep}"]
    with open(output / "first.out", "w") as shown:  # a file: nobody reads a pipe while the other tests run
        first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", *jobs], cwd=ROOT,
                                 env=environment(cluster), stdout=shown, stderr=subprocess.STDOUT, text=True)
    yield sweep, jobs, first, output / "first.out"
    first.kill()  # if its test did not wait for it; the cluster's teardown cancels its jobs


def job_logs(sweep: Path) -> list[str]:
    return [p.read_text() for p in sorted(sweep.glob(".submitit/*/*_log.out"))]


def walk_forward(csv: Path) -> list[str]:
    """Two folds of one model: the sweep's two jobs differ, and pooling has folds to pool."""
    return ["backtest=walk_forward", "backtest.n_folds=2", "backtest.fold=range(2)", "model=vanilla",
            "data=csv", f"data.path={csv}", *QUIET_OFF, "model.num_layers=1"]


@pytest.mark.usefixtures("time_limited")
def test_walk_forward_sweep_on_slurm_pools_exactly_as_a_local_sweep(cluster, study_csv, tmp_path):
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    result = train(cluster, *walk_forward(study_csv), *SLURM, f"hydra.sweep.dir={on_slurm}")
    shown = result.stdout + result.stderr  # accounting is off: job states come from squeue, said once
    assert "Bypassing sacct error" not in shown and shown.count("job states come from squeue") == 1, shown
    # the same sweep with the basic launcher, run in this test process (no interpreter to start, torch is loaded)
    run_main("train.py", ["-m", *walk_forward(study_csv), f"hydra.sweep.dir={local}"], check=True)
    for sweep in (on_slurm, local):  # scripts/compare.py's main, in this process
        compare.main([str(sweep), "--reps", "100"])
    pooled = [pd.read_csv(sweep / "pooled.csv").set_index("config").sort_index() for sweep in (on_slurm, local)]
    assert list(pooled[0].index) == ["persistence", "vanilla"] and pooled[0].loc["vanilla", "folds"] == 2
    pd.testing.assert_frame_equal(*pooled)

    logs = job_logs(on_slurm)
    assert len(logs) == 2
    for text in logs:  # what a user reads in each job's SLURM log: one line per epoch and the final table
        assert len(re.findall(r"epoch 1/1, train/loss [\d.]+, val/loss [\d.]+", text)) == 1, text[-2000:]
        assert "Test period, in price units:" in text
        assert "\r" not in text and "it/s]" not in text  # no progress bar


@pytest.mark.usefixtures("time_limited")
def test_a_requeued_job_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(cluster, study_csv, tmp_path):
    job = ["model=vanilla", "data=csv", f"data.path={study_csv}", *FAST, "trainer.limit_train_batches=null",
           "trainer.max_epochs=6"]
    sweep = tmp_path / "requeued"
    sweeping = train(cluster, *job, *SLURM, f"hydra.sweep.dir={sweep}", background=True)
    try:
        deadline = time.monotonic() + 600
        while not list(sweep.glob("*/checkpoints/last.ckpt")):  # the first epoch is done: pre-empt the job
            assert sweeping.poll() is None and time.monotonic() < deadline, sweeping.stdout.read()[-3000:]
            time.sleep(0.5)
        (job_id,) = [p.name for p in sweep.glob(".submitit/*") if p.name.isdigit()]
        cluster.requeue(job_id)
        output, _ = sweeping.communicate(timeout=600)
    finally:
        sweeping.kill()
    assert sweeping.returncode == 0, output[-4000:]
    (folder,) = [p.parent for p in sweep.glob("*/metrics.json")]
    record = json.loads((folder / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epochs"] == 6
    (log,) = job_logs(sweep)
    assert "resuming this configuration's interrupted run" in log  # the same job folder, from its checkpoint
    assert "epoch 6/6" in log

    reference = tmp_path / "uninterrupted"
    run_main("train.py", ["-m", *job, f"hydra.sweep.dir={reference}"], check=True)  # the basic launcher, in here
    (expected,) = [json.loads(p.read_text()) for p in reference.glob("*/metrics.json")]
    assert {k: v for k, v in record.items() if k.startswith("test/")} == \
        {k: v for k, v in expected.items() if k.startswith("test/")}


def test_a_job_killed_by_its_time_limit_is_recorded_and_a_rerun_runs_only_what_is_missing(cluster, time_limited):
    sweep, jobs, first, output = time_limited  # started with the cluster: by now it is about done
    first.wait(timeout=600)
    assert first.returncode == 1, output.read_text()[-4000:]
    records = sorted((json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")), key=lambda r: r["status"])
    assert [r["status"] for r in records] == ["completed", "failed"], records
    assert re.search("TIMEOUT|timed-out", records[1]["error"]), records[1]  # the reason, in the job's record
    first_jobs = {p.parent.name for p in sweep.glob(".submitit/*/*_log.out")}

    second = train(cluster, *jobs, background=True)  # the same command: only the failed job is submitted
    try:
        deadline = time.monotonic() + 300
        while not (resumed := [log.parent.name for log in sweep.glob(".submitit/*/*_log.out") if log.parent.name
                               not in first_jobs and "resuming this configuration's failed run" in log.read_text()]):
            assert second.poll() is None and time.monotonic() < deadline, second.stdout.read()[-3000:]
            time.sleep(0.5)
        # it resumed from its failed run: no need to wait for its time limit again. It gets the signal SLURM sends
        # before the time limit (submitit's --signal=USR2@signal_delay_s, to the job's step), as the first sweep's
        # job did: submitit ends it with a result at once. A plain scancel (SIGTERM, which submitit ignores, then
        # SIGKILL) leaves no result: the sweep would wait for submitit's next squeue poll, then 15 s for a result.
        cluster.run("scancel", "--signal=USR2", *resumed)
        shown, _ = second.communicate(timeout=300)
    finally:
        second.kill()
    assert second.returncode == 1 and shown.count("holds its completed run: not submitted again") == 1, shown[-4000:]
    assert len(job_logs(sweep)) == 3
