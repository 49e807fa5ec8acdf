"""An interrupted run leaves a usable last.ckpt; resuming from it gives the uninterrupted run's exact results.

Interrupted by SIGTERM or Ctrl-C (handlers run), or killed with SIGKILL at any instant (none does): re-running the
same command resumes the run in its folder.

The runs that are signalled or killed are new interpreters (`cli`); the runs that are not (the reference run, the
resumed and finished ones) run in this process (`run_main`: same command line, folder, log and exit status), with
the same numbers as in a subprocess (one torch thread in both: tests/conftest.py).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
from conftest import write_prices_csv
from reliability_helpers import TINY

from lstm_zoo.records import effective_status
from tests.helpers import ROOT, cli, read_metrics, run_main

EPOCHS = 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("resume")
    write_prices_csv(path / "p.csv")
    return path


def args(workdir: Path, run_dir: str, *extra: str) -> list[str]:
    return ["data=csv", f"data.path={workdir / 'p.csv'}", *TINY, f"trainer.max_epochs={EPOCHS}",
            "trainer.limit_train_batches=4", "seed=3", f"hydra.run.dir={workdir / run_dir}", *extra]


@pytest.fixture(scope="module")
def uninterrupted(workdir: Path) -> dict:
    result = run_main("train.py", args(workdir, "full"), workdir)
    assert result.returncode == 0, result.stdout[-3000:]
    return read_metrics(workdir / "full")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "exit_code"), [("SIGTERM", 143), ("SIGINT", 1)])
def test_interrupted_run_resumes_to_identical_results(workdir: Path, uninterrupted: dict, signum: str,
                                                      exit_code: int) -> None:
    # interrupt after epoch 1 (0-based) has ended: its last.ckpt is on disk
    stopped = cli("train.py", args(workdir, f"stopped_{signum}", "+callbacks.stop._target_=reliability_helpers."
                             "SignalAfterEpoch", "+callbacks.stop.epoch=1", f"+callbacks.stop.signum={signum}"),
                        workdir)
    run_dir = workdir / f"stopped_{signum}"
    assert stopped.returncode == exit_code, stopped.stdout[-3000:]
    assert read_metrics(run_dir)["status"] == "interrupted"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1 and "RNGState" in last["callbacks"]

    # resume from its last.ckpt, into a new run folder, without the callback that stopped it: with a different
    # configuration, a checkpoint file (a run folder would be refused as another configuration's run)
    resumed = run_main("train.py", args(workdir, f"resumed_{signum}",
                                        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"), workdir)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    metrics = read_metrics(workdir / f"resumed_{signum}")
    assert metrics["status"] == "completed" and metrics["epochs"] == EPOCHS
    for key, value in uninterrupted.items():
        if key.startswith(("test/", "val/")):
            assert metrics[key] == value, key  # bit-identical, not approximately equal
    predictions = (workdir / "full" / "predictions.csv").read_text()
    assert (workdir / f"resumed_{signum}" / "predictions.csv").read_text() == predictions


@pytest.mark.slow
def test_a_run_killed_at_any_instant_finishes_with_the_same_command(workdir: Path, uninterrupted: dict,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL (no handler runs: the out-of-memory killer, a pre-empted node) during epoch 0 before any checkpoint,
    halfway through writing epoch 1's last.ckpt, during epoch 2 and during testing; between two of them the newest
    checkpoint is torn by hand. After each kill the very same command runs again; the last one completes (in this
    process: every planned kill has happened, so its KillAt kills nothing)."""
    run_dir, marks = workdir / "killed", workdir / "marks"
    checkpoints = run_dir / "checkpoints"
    command = args(workdir, "killed", "+callbacks.kill._target_=reliability_helpers.KillAt",
                   f"+callbacks.kill.marks={marks}",
                   "+callbacks.kill.instants=[batch:0:1,write:1:last.ckpt,batch:2:1,test]")

    def again(step: str) -> str:
        result = cli("train.py", command, workdir)
        assert result.returncode == -9, f"{step}: {result.stdout[-3000:]}"  # killed where planned
        record = read_metrics(run_dir)
        assert record["status"] == "running" and effective_status(record)[0] == "interrupted"  # dead, not running
        return result.stdout

    again("during epoch 0")
    assert not list(checkpoints.glob("*.ckpt"))
    output = again("writing last.ckpt")
    assert "no complete checkpoint yet: training starts from the beginning" in output
    assert list(checkpoints.glob(".last.ckpt.*.tmp"))  # the half-written file, beside the previous last.ckpt...
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0  # ...which is intact
    output = again("during epoch 2")
    assert "resuming this configuration's interrupted run" in output and not list(checkpoints.glob(".*.tmp"))
    newest = max(checkpoints.glob("*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    newest.write_bytes(newest.read_bytes()[:1000])  # torn by something that does not write atomically
    output = again("during testing")
    assert "skipping a torn or unreadable checkpoint" in output and (checkpoints / f"{newest.name}.torn").exists()

    assert len(list(marks.iterdir())) == 4  # every planned kill happened
    monkeypatch.setattr(torch, "save", torch.save)  # KillAt wraps torch.save in its process: this one's is restored
    finished = run_main("train.py", command, workdir)
    assert finished.returncode == 0, finished.stdout[-3000:]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == EPOCHS
    for key, value in uninterrupted.items():
        if key.startswith(("test/", "val/")):
            assert metrics[key] == value, key  # bit-identical to the run never interrupted
    assert (run_dir / "predictions.csv").read_text() == (workdir / "full" / "predictions.csv").read_text()


@pytest.mark.slow
def test_ctrl_c_prints_the_command_that_resumes_the_run(workdir: Path, uninterrupted: dict) -> None:
    """A plain command (a new timestamped folder): Ctrl-C records `interrupted` and prints the exact command that
    resumes the run in its folder; that command finishes it with the uninterrupted run's results."""
    marks, cwd = workdir / "ctrl_c_marks", workdir / "ctrl_c"
    cwd.mkdir()
    command = [*args(workdir, "unused")[:-1], "+callbacks.stop._target_=reliability_helpers.InterruptAt",
               f"+callbacks.stop.marks={marks}", "+callbacks.stop.instants=[batch:2:0]"]  # without hydra.run.dir
    stopped = cli("train.py", command, cwd)
    assert stopped.returncode == 1, stopped.stdout[-3000:]
    (run_dir,) = (cwd / "outputs" / "runs").iterdir()
    record = read_metrics(run_dir)
    assert record["status"] == "interrupted" and record["error"] == "Ctrl-C (SIGINT)"
    line = next(line for line in stopped.stdout.splitlines() if "Resume it with: " in line)
    assert "Interrupted by Ctrl-C (SIGINT): checkpoints/last.ckpt holds its last finished epoch." in line
    python, script, *again = shlex.split(line.split("Resume it with: ")[1])
    assert (python, Path(script)) == ("python", ROOT / "train.py") and again == [*command, f"hydra.run.dir={run_dir}"]

    resumed = run_main("train.py", again, cwd)  # the printed command, in this process: its InterruptAt has fired
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resuming this configuration's interrupted run (Ctrl-C (SIGINT)) from last.ckpt (epoch 1" in resumed.stdout
    assert [p.name for p in (cwd / "outputs" / "runs").iterdir()] == [run_dir.name]  # no new folder
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == EPOCHS
    for key, value in uninterrupted.items():
        if key.startswith(("test/", "val/")):
            assert metrics[key] == value, key


def test_resuming_into_a_new_folder_keeps_the_old_best(tmp_path: Path) -> None:
    """Lightning drops the best score when the checkpoint folder changes; the first new epoch must not become best."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lstm_zoo.checkpoints import keep_best_across_folders

    callback = ModelCheckpoint(dirpath=tmp_path / "new", monitor="val/loss", mode="min", save_top_k=1)
    trainer = L.Trainer(callbacks=[callback], logger=False, enable_progress_bar=False)
    old = str(tmp_path / "old" / "epoch01.ckpt")
    state = {"dirpath": str(tmp_path / "old"), "best_model_score": torch.tensor(0.1), "best_model_path": old,
             "best_k_models": {old: torch.tensor(0.1)}, "kth_best_model_path": old, "kth_value": torch.tensor(0.1),
             "last_model_path": str(tmp_path / "old" / "last.ckpt")}
    checkpoint = {"callbacks": {callback.state_key: state}}
    keep_best_across_folders(trainer, checkpoint)
    with pytest.warns(UserWarning, match="dirpath has changed"):
        callback.load_state_dict(state)  # what Lightning does next: it keeps only best_model_path
    assert callback.best_model_path == old and float(callback.best_model_score) == pytest.approx(0.1)
    assert not callback.check_monitor_top_k(trainer, torch.tensor(0.2))  # a worse epoch does not replace it
    assert callback.check_monitor_top_k(trainer, torch.tensor(0.05))


def test_a_run_folder_moved_while_interrupted_tests_its_best_checkpoint_where_it_now_is(tmp_path: Path) -> None:
    """last.ckpt records absolute paths; after `mv` of the run folder, Lightning restores only the old best path."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lstm_zoo.checkpoints import best_checkpoint, keep_best_across_folders

    moved = tmp_path / "moved" / "checkpoints"
    moved.mkdir(parents=True)
    (moved / "epoch01.ckpt").write_bytes(b"weights")
    callback = ModelCheckpoint(dirpath=moved, monitor="val/loss", mode="min", save_top_k=1)
    trainer = L.Trainer(callbacks=[callback], logger=False, enable_progress_bar=False)
    old = str(tmp_path / "before" / "checkpoints" / "epoch01.ckpt")  # the folder's old place: gone
    state = {"dirpath": str(tmp_path / "before" / "checkpoints"), "best_model_score": torch.tensor(0.1),
             "best_model_path": old, "best_k_models": {old: torch.tensor(0.1)}, "kth_best_model_path": old,
             "kth_value": torch.tensor(0.1), "last_model_path": str(tmp_path / "before" / "checkpoints" / "last.ckpt")}
    keep_best_across_folders(trainer, {"callbacks": {callback.state_key: state}})
    with pytest.warns(UserWarning, match="dirpath has changed"):
        callback.load_state_dict(state)
    assert best_checkpoint(callback) == str(moved / "epoch01.ckpt") == callback.best_model_path

    elsewhere = tmp_path / "old_run"  # resuming into a new folder from a run that is still there: its file is kept
    elsewhere.mkdir()
    (elsewhere / "epoch01.ckpt").write_bytes(b"weights")
    callback.best_model_path = str(elsewhere / "epoch01.ckpt")
    assert best_checkpoint(callback) == str(elsewhere / "epoch01.ckpt")
