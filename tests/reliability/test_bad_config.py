"""Bad configuration fails at start, before any training, naming the field and what it may be."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_train
from hydra.errors import ConfigCompositionException, InstantiationException, MissingConfigException
from reliability_helpers import TINY

from lstm_zoo.errors import ConfigError
from lstm_zoo.pipeline import run
from tests.helpers import read_metrics, run_main


@pytest.mark.parametrize(("group", "options"), [("model", "gru stacked vanilla"), ("data", "csv ibm"),
                                                ("trainer", "cpu ddp gpu")])
def test_unknown_option_lists_the_valid_ones(group: str, options: str) -> None:
    with pytest.raises(MissingConfigException) as err:
        compose_train([f"{group}=nope"])
    message = str(err.value)
    assert f"Could not find '{group}/nope'" in message
    assert all(f"\t{option}\n" in message + "\n" for option in options.split())


def test_misspelled_key_fails_when_composing() -> None:
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'data\.windw'"):
        compose_train(["data.windw=5"])


def test_added_misspelled_key_fails_before_training(fast_cfg, tmp_path: Path) -> None:
    with pytest.raises(InstantiationException, match="unexpected keyword argument 'hiden_size'"):
        run(fast_cfg("+model.hiden_size=8"))
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert read_metrics(tmp_path / "run")["status"] == "failed"


@pytest.mark.parametrize(("override", "message"), [
    ("data.window=0", r"data\.window=0 is out of range: it must be an integer >= 1"),
    ("data.horizon=-1", r"data\.horizon=-1 is out of range: it must be an integer >= 1"),
    ("model.dropout=1.0", r"model\.dropout=1\.0 is out of range: it must be in \[0, 1\)"),
    ("model.hidden_size=0", r"model\.hidden_size=0 is out of range: it must be an integer >= 1"),
    ("model.num_layers=-2", r"model\.num_layers=-2 is out of range: it must be an integer >= 1"),
    ("model.dropout=-0.1", r"model\.dropout=-0\.1 is out of range: it must be in \[0, 1\)"),
    ("model.optimizer.lr=0", r"model\.optimizer\.lr=0 is out of range: it must be > 0"),
    ("model.optimizer.lr=-1e-3", r"model\.optimizer\.lr=-0\.001 is out of range: it must be > 0"),
    ("data.val_fraction=1.5", r"data\.val_fraction=1\.5 is out of range: it must be in \[0, 1\)"),
    ("data.train_end=2022-06-30", r"data\.test_start=2022-01-01 must be after data\.train_end=2022-06-30"),
    ("data.test_start=soon", r"data\.test_start='soon' is not a date"),
])
def test_out_of_range_values_fail_at_start(fast_cfg, tmp_path: Path, override: str, message: str) -> None:
    overrides = [override] + (["data.test_start=2022-01-01"] if "train_end" in override else [])
    with pytest.raises(ConfigError, match=message):
        run(fast_cfg(*overrides))
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained
    metrics = read_metrics(tmp_path / "run")
    assert metrics["status"] == "failed" and metrics["error"].startswith("ConfigError: ")


@pytest.mark.parametrize(("overrides", "message"), [
    (["test_checkpoint=newest"], r"test_checkpoint='newest' is not one of \['best', 'last'\]"),
    (["data.val_fraction=0"], r"data\.val_fraction=0 leaves no validation set, but callbacks\.checkpoint, "
                              r"test_checkpoint=best need\(s\) val/loss\. Fix: test_checkpoint=last "
                              r"'~callbacks\.checkpoint' scheduler=null"),
    (["data.val_fraction=0", "test_checkpoint=last", "~callbacks.checkpoint", "scheduler=reduce_on_plateau"],
     r"data\.val_fraction=0 leaves no validation set, but scheduler need\(s\) val/loss"),
])
def test_runs_without_a_validation_set_must_not_watch_val_loss(fast_cfg, tmp_path: Path, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        run(fast_cfg(*overrides))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_run_without_a_validation_set_trains_on_every_window(fast_cfg) -> None:
    metrics = run(fast_cfg("data.val_fraction=0", "test_checkpoint=last", "~callbacks.checkpoint",
                           "trainer.limit_val_batches=0"))
    assert metrics["status"] == "completed" and metrics["windows"]["val"] == 0 and metrics["tested_weights"] == "last"


def test_gpu_trainer_without_cuda_is_one_sentence(fast_cfg, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        run(fast_cfg("trainer=gpu"))
    message = str(err.value)
    assert message.startswith("trainer.accelerator=gpu needs a CUDA GPU, but none is usable here")
    assert "Fix: trainer=cpu" in message and "\n" not in message


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_prints_one_line_not_a_traceback(tmp_path: Path) -> None:
    """A user error reaches the terminal as one log line and exit status 1, for config and data alike."""
    result = run_main("train.py", ["trainer=gpu", f"hydra.run.dir={tmp_path / 'gpu'}"], tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout and "Error executing job" not in result.stdout
    errors = [line for line in result.stdout.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "needs a CUDA GPU" in errors[0]

    missing = tmp_path / "missing.csv"
    result = run_main("train.py", ["data=csv", f"data.path={missing}", *TINY, f"hydra.run.dir={tmp_path / 'data'}"],
                 tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stdout
    assert f"DataError: data.path: no such file: {missing}" in result.stdout
    assert read_metrics(tmp_path / "data")["status"] == "failed"
