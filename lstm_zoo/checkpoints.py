"""Checkpoints: which file a path means, loading one safely (weights-only), resuming from one, and the model and
data a trained checkpoint holds; `AtomicCheckpointIO` writes them (conf/trainer/cpu.yaml's plugin)."""

from __future__ import annotations

import inspect
import json
import logging
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from omegaconf import DictConfig, OmegaConf

from lstm_zoo.data import StockDataModule
from lstm_zoo.data.splits import WalkForward
from lstm_zoo.errors import CheckpointError, ConfigError
from lstm_zoo.models import Forecaster
from lstm_zoo.records import atomic_file

log = logging.getLogger(__name__)


def checkpoint_file(path: str | None) -> str | None:
    """The checkpoint eval/predict/export use: a file, or a run folder's published weights, or 'last' (this run's).

    A run folder means the weights whose test metrics the run published: the best checkpoint its metrics.json names
    when it tested that one (`tested_weights: best`), else its checkpoints/last.ckpt. (Resuming a run folder is
    `lstm_zoo.lifecycle`'s business: it always continues from the newest complete checkpoint.)
    """
    if path is None or str(path) == "last":
        return path
    given = Path(str(path)).expanduser()
    file = published_weights(given) if given.is_dir() else given
    if not file.is_file():
        raise CheckpointError(f"ckpt_path: no checkpoint at {file}. Fix: pass a .ckpt file or a run folder "
                              "holding checkpoints/last.ckpt, e.g. ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt.")
    return str(file)


def published_weights(folder: Path) -> Path:
    """The checkpoint of a run folder whose weights its published test metrics describe (see `checkpoint_file`)."""
    try:
        record = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        record = {}
    best = record.get("best_checkpoint") if isinstance(record, dict) and record.get("tested_weights") == "best" \
        else None
    if best:  # the recorded path, or the same file name in this folder (a run folder moved or copied elsewhere)
        candidates = [folder / "checkpoints" / Path(best).name, Path(best)]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise CheckpointError(f"ckpt_path={folder}: its metrics.json says the run tested {best}, which is gone. "
                                  "Fix: pass another checkpoint file, e.g. ckpt_path="
                                  f"{folder / 'checkpoints' / 'last.ckpt'} (the weights after the last epoch).")
        return found
    return next((p for p in (folder / "checkpoints" / "last.ckpt", folder / "last.ckpt") if p.is_file()),
                folder / "checkpoints" / "last.ckpt")


def load_checkpoint(path: str | Path) -> dict:
    """Load a Lightning checkpoint with `weights_only=True`: tensors and plain values only, so no code can run."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a checkpoint (expected a .ckpt file written by this project, a zip "
                              "archive; the file may be truncated or something else). Fix: pass another ckpt_path.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # the pickle itself is damaged
            unsafe = []
        if unsafe:
            raise CheckpointError(f"{path}: refused to load: it holds Python objects beyond tensors and plain "
                                  f"values ({', '.join(unsafe)}), which could run code. Fix: use a checkpoint "
                                  "written by this project.") from None
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint (its saved objects do not decode). Fix: "
                              "use another checkpoint, e.g. the run's other .ckpt file.") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({str(err).splitlines()[0]}). Fix: use "
                              "another checkpoint, e.g. the run's other .ckpt file.") from None


def newest_complete_checkpoint(folder: Path, quarantine: bool = True) -> tuple[Path, dict] | None:
    """The newest `*.ckpt` in `folder` that loads as a training checkpoint, and its contents; None if there is none.

    A newer torn or unreadable one is skipped with a warning and, with `quarantine`, renamed `<name>.torn` so that
    it is never picked again (nor overwritten unseen: it stays for inspection).
    """
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"),
                        reverse=True)
    for path in candidates:
        try:
            checkpoint = load_checkpoint(path)
            if not isinstance(checkpoint, dict) or not {"state_dict", "loops", "epoch"} <= checkpoint.keys():
                raise CheckpointError(f"{path}: not a training checkpoint (no state_dict, loops and epoch)")
        except CheckpointError as err:
            renamed = path.with_name(path.name + ".torn") if quarantine else None
            warnings.warn(f"skipping a torn or unreadable checkpoint in favour of an older complete one"
                          f"{f' (renamed {renamed.name})' if renamed else ''}: {err}", stacklevel=2)
            if renamed:
                path.replace(renamed)
            continue
        return path, checkpoint
    return None


def keep_best_across_folders(trainer: L.Trainer, checkpoint: dict) -> None:
    """Resuming into a new run folder: keep the old run's best score, which Lightning drops when the folder changes.

    Without it the first epoch after resuming becomes "best" whatever its loss. Files of the old run are never
    deleted (ModelCheckpoint only removes files in its own folder).
    """
    for callback in trainer.checkpoint_callbacks:
        state = checkpoint.get("callbacks", {}).get(callback.state_key)
        if state and state.get("dirpath") != callback.dirpath:
            callback.best_model_score = state["best_model_score"]
            callback.best_k_models = state.get("best_k_models", {})
            callback.kth_best_model_path, callback.kth_value = state["kth_best_model_path"], state["kth_value"]


def best_checkpoint(callback: L.pytorch.callbacks.ModelCheckpoint) -> str:
    """`callback`'s best checkpoint. A run folder moved while interrupted keeps its old absolute path in last.ckpt,
    and Lightning restores that path alone when the folder changed: where that file is gone and one of its name is in
    the callback's own folder, the run resumed in its moved folder and its best checkpoint is that one."""
    best = callback.best_model_path
    if best and not Path(best).exists() and callback.dirpath:
        moved = Path(callback.dirpath) / Path(best).name
        if moved.is_file():
            callback.best_model_path = best = str(moved)
    return best


def load_checkpoint_or_older(path: Path) -> tuple[Path, dict]:
    """`path` and its contents; for a torn `last.ckpt` (not a zip archive: cut short by a copy, a full disk), the
    newest complete checkpoint beside it, said in one line: last.ckpt means the newest, and the newest intact one is.
    Any other damaged or unsafe file is an error."""
    try:
        return path, load_checkpoint(path)
    except CheckpointError:
        if path.name != "last.ckpt" or zipfile.is_zipfile(path):
            raise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # newest_complete_checkpoint would warn about this very file again
            found = newest_complete_checkpoint(path.parent, quarantine=False)
        if found is None:
            raise
    older, checkpoint = found
    log.warning("ckpt_path=%s is torn (not a complete checkpoint): resuming from the newest complete one beside it, "
                "%s (epoch %d, step %d).", path, older.name, checkpoint.get("epoch", -1),
                checkpoint.get("global_step", 0))
    return older, checkpoint


def load_forecaster(path: str | Path, **overrides) -> tuple[Forecaster, dict]:
    """A trained model and its data module's state (scaler, window, horizon, features, target), weights-only.

    `overrides` replace hyper-parameters of evaluation only, e.g. interval_levels.
    """
    given, path = path, checkpoint_file(str(path))
    if Path(str(given)).is_dir():
        log.info("ckpt_path=%s: its %s (the weights of its published test metrics)", given, Path(path).name)
    checkpoint = load_checkpoint(path)
    class_path = checkpoint.get("forecaster_class")
    if not class_path:
        raise CheckpointError(f"{path}: names no model class, so it was not written by lstm_zoo's train.py. "
                              "Fix: ckpt_path=<a run folder of train.py, or its checkpoints/*.ckpt>.")
    cls = get_class(class_path)
    if not issubclass(cls, Forecaster):
        raise CheckpointError(f"{path}: model class {class_path} is not a lstm_zoo Forecaster.")
    data_state = checkpoint.get(StockDataModule.__qualname__)
    if not data_state:
        raise CheckpointError(f"{path}: holds no data scaling (StockDataModule state), so its forecasts cannot be "
                              "mapped back to prices. Fix: use a checkpoint written by train.py after setup.")
    return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True, **overrides), data_state


LAYOUT = ("window", "horizon", "features", "target", "target_transform")  # fixed by a model's trained weights


def data_for_checkpoint(data: DictConfig | None, data_state: dict, ckpt: str = "the checkpoint") -> StockDataModule:
    """The data a checkpoint's model was trained on (its recorded data config, split and scaling), with the fields
    `data` sets (any value but `???`; but null for the `LAYOUT` fields) in their place, said in one line; a field
    the weights fix (`LAYOUT`) must equal the checkpoint's. Its validation windows are only those the model never
    trained on (they calibrate conformal intervals)."""
    stored = dict(data_state.get("config") or {})  # empty in checkpoints written before they recorded it
    layout = {k: data_state[k] for k in LAYOUT if k in data_state}
    raw = {} if data is None else OmegaConf.to_container(data, resolve=True, throw_on_missing=False)
    target = raw.pop("_target_", "lstm_zoo.data.StockDataModule")
    given = {k: v for k, v in raw.items() if v != "???" and not (k in LAYOUT and v is None)}  # None: the ckpt's
    for key in LAYOUT:
        if key in given and key in layout and given[key] != layout[key]:
            raise ConfigError(f"data.{key}={given[key]} differs from {ckpt}'s data.{key}={layout[key]}, which its "
                              f"trained weights fix. Fix: drop data.{key} (the checkpoint's is used), or train a model "
                              f"with data.{key}={given[key]}.")
    missing = [k for k, v in raw.items() if v == "???" and k not in stored and k not in layout]
    if missing:
        raise ConfigError(f"{ckpt} records no data configuration (written before checkpoints did), so data."
                          f"{missing[0]} is unknown. Fix: name the data it was trained on, e.g. data=ibm, or data=csv "
                          "data.path=<its file> (with its split).")

    def same(key: str, value: object) -> bool:
        if key == "path" and value and stored.get(key):
            return str(Path(str(value)).expanduser().resolve()) == stored[key]
        return value == stored.get(key)

    changed = {k: v for k, v in given.items() if k not in LAYOUT and k in stored and not same(k, v)}
    backtest = data_state.get("backtest")
    if backtest and ({"train_end", "test_start"} & changed.keys()):
        log.info("data.train_end/test_start from the command line replace %s's walk-forward fold %s.", ckpt,
                 backtest.get("fold"))
        backtest = None
    if changed:
        log.info("Data of %s, except from the command line: %s.", ckpt,
                 "; ".join(f"data.{k}={v} (the checkpoint's: {stored[k]})" for k, v in changed.items()))
    cls = get_class(target)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in {**stored, **given, **layout}.items() if k in accepted and k != "backtest"}
    datamodule: StockDataModule = cls(**kwargs, backtest=WalkForward(**backtest) if backtest else None)
    datamodule.load_state_dict(data_state)  # before setup: the training scaler, not one refit on these data
    datamodule.trained_until = data_state.get("last_trained_window")  # None: not recorded (older checkpoints)
    return datamodule


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic: a kill at any instant leaves the previous checkpoint intact.

    Lightning 2.6 saves through an fsspec transaction that writes to the system temp folder and then moves the file;
    when that folder is on another file system (a tmpfs /tmp, node-local scratch), the move is a copy into the
    checkpoint in place, and a kill during it leaves a torn `last.ckpt` (and a checkpoint-sized file in /tmp).
    Remote paths (s3://, ...) keep Lightning's own save.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as f:
            torch.save(checkpoint, f)
