"""Re-running is resuming: what a run does with a folder that already holds a run (in-process, small runs).

The SIGKILL subprocess tests (kills at many instants, a killed joblib worker) are in test_interrupt_resume.py and
test_sweep_failures.py.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_train, write_prices_csv
from omegaconf import OmegaConf
from reliability_helpers import TINY, FailAt

from lstm_zoo import records
from lstm_zoo.checkpoints import newest_complete_checkpoint
from lstm_zoo.errors import CheckpointError, ConfigError
from lstm_zoo.evaluation.leaderboard import compare
from lstm_zoo.lifecycle import config_id
from lstm_zoo.pipeline import run
from lstm_zoo.records import AtomicCheckpointIO, RunRecord, effective_status, gone, this_process
from tests.helpers import read_metrics

RESULTS = ("val/", "test/")


def results(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k.startswith(RESULTS)}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prices_csv(tmp_path_factory.mktemp("lifecycle") / "p.csv")


@pytest.fixture(scope="module")
def make_cfg(data: Path):
    def make(folder: Path, *overrides: str):
        return compose_train(["data=csv", f"data.path={data}", *TINY, "trainer.max_epochs=2",
                              "trainer.limit_train_batches=4", "seed=5", *overrides], folder)
    return make


@pytest.fixture(scope="module")
def completed(make_cfg, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed 2-epoch run; tests work on copies of its folder."""
    folder = tmp_path_factory.mktemp("completed") / "run"
    run(make_cfg(folder))
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_same_configuration_ignores_output_paths_and_display_switches(data: Path, tmp_path: Path) -> None:
    base = ["data=csv", f"data.path={data}", *TINY]
    same = config_id(compose_train(base, tmp_path / "a"))
    assert config_id(compose_train([*base, "ckpt_path=/x", "force=true", "trainer.enable_progress_bar=true",
                                    "trainer.enable_model_summary=true"], tmp_path / "b")) == same
    for change in ("seed=1", "model.hidden_size=9", "trainer.max_epochs=3", "data.window=11", "test=false"):
        assert config_id(compose_train([*base, change], tmp_path / "a")) != same, change


def test_a_completed_run_returns_its_recorded_results_without_training(completed: Path, make_cfg, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    folder = copy_of(completed, tmp_path)
    recorded = read_metrics(folder)
    stamps = {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").glob("*.ckpt")}
    with caplog.at_level(logging.INFO, logger="lstm_zoo.lifecycle"):
        again = run(make_cfg(folder, "trainer.enable_progress_bar=true"))  # a display switch: the same run
    assert "holds a completed run of this configuration" in caplog.text
    assert results(again) == results(recorded) and again["train_seconds"] == recorded["train_seconds"]
    assert read_metrics(folder) == recorded  # nothing rewritten
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").glob("*.ckpt")} == stamps

    retrained = run(make_cfg(folder, "force=true"))
    rewritten = {p.name: p.stat().st_mtime_ns for p in (folder / "checkpoints").glob("*.ckpt")}
    assert rewritten.keys() == stamps.keys() and all(rewritten[k] != stamps[k] for k in stamps)  # trained again
    assert results(retrained) == results(recorded)  # same seed, same numbers


def test_a_different_configuration_is_refused_and_the_folder_left_as_it_was(completed: Path, make_cfg,
                                                                           tmp_path: Path) -> None:
    folder = copy_of(completed, tmp_path)
    record = (folder / "metrics.json").read_text()
    hydra_config = folder / ".hydra" / "config.yaml"
    hydra_config.write_text("# what Hydra writes for the new attempt before the task starts\n")
    with pytest.raises(ConfigError, match=r"holds a run of another configuration \(model\.hidden_size: 8 -> 16\); "
                                          r"refusing to mix them\. Fix: .*force=true"):
        run(make_cfg(folder, "model.hidden_size=16"))
    assert (folder / "metrics.json").read_text() == record
    assert hydra_config.read_text() == (folder / ".hydra" / "recorded" / "config.yaml").read_text()  # restored
    assert OmegaConf.load(hydra_config).model.hidden_size == 8


def test_a_run_killed_before_its_first_checkpoint_starts_again(make_cfg, completed: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "run"
    cfg = make_cfg(folder)
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / ".last.ckpt.123.456.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")
    killed = {"status": "running", "config_id": config_id(cfg),
              "process": {"pid": dead_pid(), "host": socket.gethostname(), "heartbeat": "2026-01-01T00:00:00+00:00"}}
    (folder / "metrics.json").write_text(json.dumps(killed))
    assert effective_status(killed)[0] == "interrupted"
    with caplog.at_level(logging.INFO, logger="lstm_zoo.lifecycle"):
        metrics = run(cfg)
    assert "has no complete checkpoint yet: training starts from the beginning" in caplog.text
    assert metrics["status"] == "completed" and results(metrics) == results(read_metrics(completed))
    assert not list((folder / "checkpoints").glob(".*.tmp"))


def test_ckpt_path_to_a_failed_run_resumes_it_to_identical_results(make_cfg, completed: Path,
                                                                      tmp_path: Path) -> None:
    folder = tmp_path / "run"
    fault = [f"+callbacks.fault._target_={FailAt.__module__}.FailAt", f"+callbacks.fault.marks={tmp_path / 'marks'}",
             "+callbacks.fault.instants=[batch:1:2]"]
    with pytest.raises(RuntimeError, match="injected failure at batch:1:2"):
        run(make_cfg(folder, *fault))
    assert read_metrics(folder)["status"] == "failed"
    resumed = tmp_path / "resumed"  # the same command (the fault fired once already), continued in a new folder
    metrics = run(make_cfg(resumed, *fault, f"ckpt_path={folder}"))
    assert read_metrics(resumed)["process"]["resumed_from"] == str(folder / "checkpoints" / "last.ckpt")
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert results(metrics) == results(read_metrics(completed))  # bit-identical to the uninterrupted run
    assert (resumed / "predictions.csv").read_text() == (completed / "predictions.csv").read_text()


def test_a_torn_last_ckpt_as_ckpt_path_resumes_from_the_newest_complete_one(make_cfg, completed: Path, tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "run"
    fault = [f"+callbacks.fault._target_={FailAt.__module__}.FailAt", f"+callbacks.fault.marks={tmp_path / 'marks'}",
             "+callbacks.fault.instants=[batch:1:2]"]
    with pytest.raises(RuntimeError, match="injected failure at batch:1:2"):
        run(make_cfg(folder, *fault))
    last = folder / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # torn by a copy that did not finish
    (older,) = (folder / "checkpoints").glob("epoch00*.ckpt")
    resumed = tmp_path / "resumed"
    with caplog.at_level(logging.WARNING, logger="lstm_zoo.checkpoints"):
        metrics = run(make_cfg(resumed, *fault, f"ckpt_path={last}"))
    assert f"ckpt_path={last} is torn (not a complete checkpoint): resuming from the newest complete one beside it, " \
           f"{older.name} (epoch 0, step 4)." in caplog.text
    assert read_metrics(resumed)["process"]["resumed_from"] == str(older)
    assert metrics["status"] == "completed" and results(metrics) == results(read_metrics(completed))
    named = older.with_name("epoch01-torn.ckpt")
    named.write_bytes(last.read_bytes())
    with pytest.raises(CheckpointError, match="not a checkpoint"):  # a file named by its epoch is not "the newest"
        run(make_cfg(tmp_path / "other", *fault, f"ckpt_path={named}"))


def test_a_live_run_keeps_its_folder(make_cfg, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stat = records.process_stat(sleeper.pid)
        live = {"status": "running", "config_id": config_id(make_cfg(folder)),
                "process": {"pid": sleeper.pid, "host": socket.gethostname(), "process_start": stat and stat[1],
                            "heartbeat": "2026-01-01T00:00:00+00:00"}}
        (folder / "metrics.json").write_text(json.dumps(live))
        with pytest.raises(ConfigError, match=rf"is in use by a running run \(pid {sleeper.pid} on .*Fix"):
            run(make_cfg(folder, "force=true"))  # not even force takes a live run's folder
        assert json.loads((folder / "metrics.json").read_text()) == live
    finally:
        sleeper.kill()
        sleeper.wait()
    assert "ended without a word" in gone(live)


def test_liveness_across_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    other = {"status": "running", "process": {"pid": 1, "host": "elsewhere", "heartbeat": fresh, "job": "77"}}
    assert gone(other) is None and effective_status(other)[0] == "running"  # may be alive: it beat just now
    stale = {**other, "process": {**other["process"], "heartbeat": "2026-01-01T00:00:00+00:00"}}
    assert "ended without a word" in gone(stale) and effective_status(stale)[0] == "interrupted"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert this_process()["job"] == "77" and gone(other)  # requeued: the same scheduler job, a new process
    me = this_process()
    reused = {"status": "running", "process": {**me, "pid": os.getppid(), "process_start": "1"}}
    assert gone(reused)  # a live pid, but not the process that wrote the record


def test_the_heartbeat_beats_until_the_run_finishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "HEARTBEAT_SECONDS", 0.05)
    record = RunRecord(tmp_path, "abc", None)
    first = read_metrics(tmp_path)
    assert first["status"] == "running" and first["process"]["pid"] == os.getpid()
    deadline = time.monotonic() + 30
    while read_metrics(tmp_path)["process"]["heartbeat"] == first["process"]["heartbeat"]:
        assert time.monotonic() < deadline, "no heartbeat"
        time.sleep(0.1)
    record.finish("completed", {"status": "running", "test/rmse": 1.5})
    final = (tmp_path / "metrics.json").read_text()
    time.sleep(0.3)
    assert (tmp_path / "metrics.json").read_text() == final  # the thread has stopped
    assert json.loads(final)["status"] == "completed" and json.loads(final)["config_id"] == "abc"


def test_ckpt_path_to_a_completed_run_returns_its_results(completed: Path, make_cfg, tmp_path: Path) -> None:
    metrics = run(make_cfg(tmp_path / "new", f"ckpt_path={completed}"))
    assert results(metrics) == results(read_metrics(completed))
    assert read_metrics(tmp_path / "new")["results_from"] == str(completed)
    assert not (tmp_path / "new" / "checkpoints").exists()
    with pytest.raises(ConfigError, match=rf"ckpt_path={completed} holds a run of another configuration "
                                          r"\(seed: 5 -> 6\)"):
        run(make_cfg(tmp_path / "other", f"ckpt_path={completed}", "seed=6"))
    assert read_metrics(tmp_path / "other")["status"] == "failed"  # its own, new folder records the refusal


def test_a_torn_newest_checkpoint_is_skipped_for_the_newest_complete_one(completed: Path, tmp_path: Path) -> None:
    folder = copy_of(completed, tmp_path) / "checkpoints"
    best = next(p for p in folder.glob("epoch*.ckpt"))
    last = folder / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # torn by a writer that is not atomic
    with pytest.warns(UserWarning, match=r"skipping a torn or unreadable checkpoint.*last\.ckpt: not a checkpoint"):
        assert newest_complete_checkpoint(folder, quarantine=False)[0] == best
    assert last.exists()
    with pytest.warns(UserWarning, match=r"renamed last\.ckpt\.torn"):
        path, checkpoint = newest_complete_checkpoint(folder)
    assert path == best and checkpoint["epoch"] == int(best.name[5:7])
    assert not last.exists() and (folder / "last.ckpt.torn").exists()


KILL_WHILE_SAVING = """
import os, signal, sys, torch
from lstm_zoo.records import AtomicCheckpointIO

class Bomb:  # pickled inside torch.save, once the temporary file is open: the process dies during the save
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGKILL)

AtomicCheckpointIO().save_checkpoint({"weights": torch.ones(50_000), "then": Bomb()}, sys.argv[1])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"weights": torch.zeros(50_000)}, path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    killed = subprocess.run([sys.executable, "-c", KILL_WHILE_SAVING, str(path)], env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.zeros(50_000))  # the old one, whole
    partial = list(path.parent.glob(".last.ckpt.*.tmp"))
    assert len(partial) == 1  # killed inside the save, whose file is beside the checkpoint (never /tmp)
    with pytest.raises(AttributeError):  # an error while writing (a lambda does not pickle): no file left behind
        io.save_checkpoint({"weights": torch.ones(3), "bad": lambda: 0}, path)
    assert len(list(path.parent.glob(".*.tmp"))) == 1
    io.save_checkpoint({"weights": torch.ones(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.ones(3))


def test_the_leaderboard_lists_a_killed_run_as_interrupted(completed: Path, make_cfg, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    done = copy_of(completed, sweep)
    OmegaConf.save(make_cfg(done), done / ".hydra" / "config.yaml")
    killed = sweep / "killed"
    (killed / ".hydra").mkdir(parents=True)
    OmegaConf.save(make_cfg(killed, "seed=6"), killed / ".hydra" / "config.yaml")
    (killed / "metrics.json").write_text(json.dumps({"status": "running", "config_id": "x", "process": {
        "pid": dead_pid(), "host": socket.gethostname(), "heartbeat": "2026-01-01T00:00:00+00:00"}}))
    table = compare(sweep, ["seed"])
    assert table.loc[5, "seeds"] == 1 and table.loc[6, "failed"] == 1
    text = (sweep / "leaderboard.md").read_text()
    assert "1 completed, 1 interrupted" in text
    assert "- killed: interrupted: its process (pid" in text and "ended without a word (SIGKILL" in text
