"""An interrupted run leaves a usable last.ckpt; resuming from it gives the uninterrupted run's exact results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_prices_csv
from reliability_helpers import TINY, read_metrics, train_cli

EPOCHS = 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("resume")
    write_prices_csv(path / "p.csv")
    return path


def args(workdir: Path, run_dir: str, *extra: str) -> list[str]:
    return ["data=csv", f"data.path={workdir / 'p.csv'}", *TINY, f"trainer.max_epochs={EPOCHS}", "seed=3",
            f"hydra.run.dir={workdir / run_dir}", *extra]


@pytest.fixture(scope="module")
def uninterrupted(workdir: Path) -> dict:
    result = train_cli(args(workdir, "full"), workdir)
    assert result.returncode == 0, result.stdout[-3000:]
    return read_metrics(workdir / "full")


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "exit_code"), [("SIGTERM", 143), ("SIGINT", 1)])
def test_interrupted_run_resumes_to_identical_results(workdir: Path, uninterrupted: dict, signum: str,
                                                      exit_code: int) -> None:
    # interrupt after epoch 1 (0-based) has ended: its last.ckpt is on disk
    stopped = train_cli(args(workdir, f"stopped_{signum}", "+callbacks.stop._target_=reliability_helpers."
                             "SignalAfterEpoch", "+callbacks.stop.epoch=1", f"+callbacks.stop.signum={signum}"),
                        workdir)
    run_dir = workdir / f"stopped_{signum}"
    assert stopped.returncode == exit_code, stopped.stdout[-3000:]
    assert read_metrics(run_dir)["status"] == "interrupted"
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1 and "RNGState" in last["callbacks"]

    # resume from the run folder, into a new run folder
    resumed = train_cli(args(workdir, f"resumed_{signum}", f"ckpt_path={run_dir}"), workdir)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    metrics = read_metrics(workdir / f"resumed_{signum}")
    assert metrics["status"] == "completed" and metrics["epochs"] == EPOCHS
    for key, value in uninterrupted.items():
        if key.startswith(("test/", "val/")):
            assert metrics[key] == value, key  # bit-identical, not approximately equal
    predictions = (workdir / "full" / "predictions.csv").read_text()
    assert (workdir / f"resumed_{signum}" / "predictions.csv").read_text() == predictions


def test_resuming_into_a_new_folder_keeps_the_old_best(tmp_path: Path) -> None:
    """Lightning drops the best score when the checkpoint folder changes; the first new epoch must not become best."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lstm_zoo.checks import keep_best_across_folders

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
