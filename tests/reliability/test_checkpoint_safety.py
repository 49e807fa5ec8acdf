"""Checkpoints hold only tensors and plain values; resuming loads them weights-only, so a crafted one runs nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_prices_csv
from reliability_helpers import TINY

from lstm_zoo.checkpoints import load_checkpoint
from lstm_zoo.errors import CheckpointError
from lstm_zoo.pipeline import run
from tests.helpers import read_metrics, run_main


class Exploit:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import compose_train

    path = tmp_path_factory.mktemp("trained")
    csv = write_prices_csv(path / "p.csv")
    run(compose_train(["data=csv", f"data.path={csv}", *TINY, "trainer.max_epochs=2"], path / "run"))
    return path / "run"


def test_real_checkpoints_hold_no_unsafe_globals(trained_run: Path) -> None:
    checkpoints = sorted((trained_run / "checkpoints").glob("*.ckpt"))
    assert len(checkpoints) == 2  # the best one and last.ckpt
    for path in checkpoints:
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        loaded = torch.load(path, weights_only=True)
        assert loaded["hyper_parameters"]["window"] == 10
        assert "data_min" in loaded["StockDataModule"]  # the fitted scaler, as plain numbers


def test_crafted_checkpoint_is_refused_and_runs_nothing(fast_cfg, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "payload": Exploit(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refused to load: .*posix\.mkdir"):
        run(fast_cfg(f"ckpt_path={evil}"))
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training


@pytest.mark.parametrize("damage", ["truncated", "csv", "empty"])
def test_damaged_checkpoint_names_the_file(trained_run: Path, tmp_path: Path, damage: str) -> None:
    path = tmp_path / "damaged.ckpt"
    source = trained_run / "checkpoints" / "last.ckpt"
    if damage == "truncated":
        path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    elif damage == "csv":
        shutil.copy(trained_run.parent / "p.csv", path)
    else:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{path}: not a checkpoint .*Fix"):
        load_checkpoint(path)


def test_corrupt_archive_member_names_the_file(trained_run: Path, tmp_path: Path) -> None:
    data = bytearray((trained_run / "checkpoints" / "last.ckpt").read_bytes())
    start = data.index(b"data.pkl") + 40  # inside the pickled record, the zip directory left intact
    data[start : start + 200] = bytes(200)
    path = tmp_path / "corrupt.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{path}: corrupt or truncated checkpoint .*Fix"):
        load_checkpoint(path)


@pytest.mark.slow
def test_a_run_writes_only_inside_outputs(tmp_path: Path) -> None:
    csv = write_prices_csv(tmp_path / "p.csv")
    before = {p for p in tmp_path.rglob("*")}
    result = run_main("train.py", ["data=csv", f"data.path={csv}", *TINY, "trainer.max_epochs=1"], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    created = {p.relative_to(tmp_path) for p in tmp_path.rglob("*")} - {p.relative_to(tmp_path) for p in before}
    assert created and all(p.parts[0] == "outputs" for p in created), sorted(map(str, created))
    run_dirs = list((tmp_path / "outputs" / "runs").iterdir())
    assert len(run_dirs) == 1 and read_metrics(run_dirs[0])["status"] == "completed"
    assert {p.parts[:3] for p in created if len(p.parts) > 3} == {("outputs", "runs", run_dirs[0].name)}
