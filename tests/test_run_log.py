"""What a user reads while and after a run: one log line per epoch and the final table, in train.log too."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import FAST, run_main


@pytest.mark.slow
def test_train_log_holds_one_line_per_epoch_and_the_summary_table(prices_csv: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [*FAST, "trainer.max_epochs=2", "data=csv", f"data.path={prices_csv}", f"hydra.run.dir={run_dir}"]
    result = run_main("train.py", overrides, cwd=tmp_path, check=True)
    log = (run_dir / "train.log").read_text()
    epochs = re.findall(r"epoch (\d)/2, train/loss [\d.]+, val/loss [\d.]+, [\d.]+ s", log)
    assert epochs == ["1", "2"], log
    assert "Test period, in price units:" in log and "persistence" in log
    assert len(re.findall(r"epoch \d/2, train/loss", result.stdout)) == 2  # the console (a SLURM log) too
    assert result.stdout.count("Test period, in price units:") == 1
