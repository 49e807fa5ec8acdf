"""Entry points load Lightning and torch only when they train, evaluate or export: `--help`, a sweep's parent
process (joblib and SLURM launchers) and scripts/compare.py pay seconds for them otherwise (Lightning brings
torchmetrics, torch._dynamo, matplotlib and scipy.signal)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra.utils import get_class

from lstm_zoo import checkpoints, records
from lstm_zoo.data import DataError
from lstm_zoo.errors import ConfigError, user_error
from tests.helpers import ROOT

ENTRY_POINTS = ["train.py", "eval.py", "predict.py", "export.py", "scripts/compare.py"]


def test_entry_points_import_neither_lightning_nor_torch() -> None:
    code = ("import json, runpy, sys\n"
            "loaded = {}\n"
            f"for script in {ENTRY_POINTS!r}:\n"
            "    runpy.run_path(script, run_name='imported')\n"  # the module as a launcher imports it: main not run
            "    loaded[script] = sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'torch'})\n"
            "print(json.dumps(loaded))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert list(loaded) == ENTRY_POINTS
    culprit = next((script for script, packages in loaded.items() if packages), None)
    assert culprit is None, f"importing {culprit} loads {loaded[culprit]}"  # the first one that does


def test_a_sweeps_parent_process_imports_neither_lightning_nor_torch() -> None:
    """What the joblib and SLURM launchers import in the sweep's parent process: each job's folder status and its
    configuration's id (lstm_zoo.lifecycle.config_id), not the checkpoints that only a job reads."""
    code = ("import sys\n"
            "import hydra_plugins.lstm_zoo_launchers.joblib_launcher, hydra_plugins.lstm_zoo_launchers.slurm_launcher\n"
            "from lstm_zoo.lifecycle import config_id\n"
            "from lstm_zoo.records import read_record, record_failure, write_json\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'torch'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


def test_lightning_misconfiguration_is_a_user_error_once_lightning_is_loaded() -> None:
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    for cause in (MisconfigurationException("`devices` must be >= 1"), DataError("data.path"), ConfigError("x")):
        wrapped = RuntimeError("Error in call to target 'lightning.pytorch.Trainer'")  # as Hydra's instantiate does
        wrapped.__cause__ = cause
        assert user_error(wrapped) is cause
    assert user_error(RuntimeError("a bug")) is None


def test_atomic_checkpoint_io_keeps_its_former_dotted_path() -> None:
    """Run folders recorded `trainer.plugins` with `_target_: lstm_zoo.records.AtomicCheckpointIO`."""
    assert get_class("lstm_zoo.records.AtomicCheckpointIO") is checkpoints.AtomicCheckpointIO
    with pytest.raises(AttributeError, match="has no attribute 'AtomicCheckpointIO2'"):
        records.AtomicCheckpointIO2  # noqa: B018
