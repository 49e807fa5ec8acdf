"""Noise nobody can act on stays out of the console and the logs: optuna's database plugins, Lightning's `srun`
hint, and the ONNX exporter's note that torchvision (which no lstm_zoo model uses) is not installed."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from lstm_zoo.build import route_lightning_logs_to_hydra
from lstm_zoo.pipeline import run
from tests.conftest import CONF, FAST, ROOT, compose_train


def test_optunas_alembic_plugin_lines_are_not_logged() -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert cfg.hydra.hydra_logging.loggers.alembic.level == "WARNING"  # its "setup plugin ..." lines are INFO


def test_lightnings_srun_hint_is_dropped_and_other_warnings_are_kept() -> None:
    route_lightning_logs_to_hydra()  # what every run does first: its warning filters stay for the process
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn("The `srun` command is available on your system but is not used. HINT: If your intention is "
                      "to run Lightning on SLURM, prepend your python command with `srun`", UserWarning, stacklevel=1)
        warnings.warn("a warning a user should read (test_quiet)", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["a warning a user should read (test_quiet)"]


@pytest.mark.slow
def test_onnx_export_prints_nothing_about_torchvision(prices_csv: Path, tmp_path: Path) -> None:
    run(compose_train(["data=csv", f"data.path={prices_csv}", *FAST, "trainer.limit_train_batches=2",
                       "model=vanilla"], tmp_path / "run"))
    result = subprocess.run([sys.executable, "export.py", f"ckpt_path={tmp_path / 'run'}", "format=onnx",
                             f"output_dir={tmp_path / 'export'}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "export" / "model.onnx").is_file()
    assert "torchvision" not in result.stdout + result.stderr
