"""A run's life in its folder: re-running a command resumes it (see docs/reliability.md).

`plan_run` decides, before anything is built, what a run does with its folder (and with `ckpt_path=<run folder>`):
resume an interrupted or failed run of the same configuration from its newest complete checkpoint, return the
recorded results of a completed one (`force=true` trains again), or refuse a folder holding another
configuration's work. The record it reads is `lstm_zoo.records`'.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lstm_zoo.errors import CheckpointError, ConfigError
from lstm_zoo.records import effective_status, read_record

log = logging.getLogger(__name__)

# keys that say where and how visibly a run goes, not what it computes: two configs differing only here are one run
VOLATILE_KEYS = ("output_dir", "ckpt_path", "force", "trainer.enable_progress_bar", "trainer.enable_model_summary")
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def config_identity(cfg: DictConfig) -> dict:
    """The composed config as written (interpolations unresolved), without the volatile keys."""
    identity = OmegaConf.to_container(cfg, resolve=False)
    for key in VOLATILE_KEYS:
        *parents, leaf = key.split(".")
        node = identity
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return identity


def config_id(cfg: DictConfig) -> str:
    """A short fingerprint of `config_identity`: equal for re-runs of the same configuration."""
    text = json.dumps(config_identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def flat(tree: object, prefix: str = "") -> dict[str, object]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def differences(out: Path, cfg: DictConfig, limit: int = 4) -> str:
    """The first keys where `cfg` differs from the configuration recorded in `out`, as 'key: old -> new'."""
    recorded = out / ".hydra" / "recorded" / "config.yaml"
    if not recorded.is_file():
        return "its recorded configuration is not available"
    old, new = flat(config_identity(OmegaConf.load(recorded))), flat(config_identity(cfg))
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k, "<absent>") != new.get(k, "<absent>")]
    shown = [f"{k}: {old.get(k, '<absent>')} -> {new.get(k, '<absent>')}" for k in changed[:limit]]
    return "; ".join(shown) + (f"; and {len(changed) - limit} more" if len(changed) > limit else "")


@dataclass
class Plan:
    """What a run does: train (from scratch, or resuming `ckpt_path`), or return `completed`'s recorded results."""

    config_id: str
    ckpt_path: str | None = None
    checkpoint: dict | None = None  # the loaded `ckpt_path`
    completed: dict | None = None
    purge_step: int | None = None  # TensorBoard: hide what an interrupted attempt logged from this step on


def plan_run(cfg: DictConfig, out: Path, rank_zero: bool = True) -> Plan:
    """Decide from the run folder `out` (and `cfg.ckpt_path`) how this run starts; raises if it must not start.

    Only rank 0 changes files; the other DDP ranks follow the decision rank 0 recorded before starting them.
    """
    from lstm_zoo.checkpoints import load_checkpoint  # torch and Lightning: not for config_id in a sweep's parent
    plan = Plan(config_id(cfg))
    record = read_record(out)
    if not rank_zero and record and record.get("status") == "running" and record.get("config_id") == plan.config_id:
        plan.ckpt_path = (record.get("process") or {}).get("resumed_from")
        plan.checkpoint = load_checkpoint(plan.ckpt_path) if plan.ckpt_path else None  # same best score as rank 0
        return plan
    try:
        if record is not None or any((out / "checkpoints").glob("*.ckpt")):
            if plan_in_own_folder(plan, cfg, out, record, rank_zero):
                return plan
        return plan_from_ckpt_path(plan, cfg, cfg.get("ckpt_path"))
    except (ConfigError, CheckpointError):
        if rank_zero:
            restore_hydra_files(out)  # Hydra wrote this attempt's config over the run's before the task started
        raise


def plan_in_own_folder(plan: Plan, cfg: DictConfig, out: Path, record: dict | None, rank_zero: bool) -> bool:
    """The folder holds a run already: refuse, return its results, or resume it. False: start as if it were empty."""
    from lstm_zoo.checkpoints import newest_complete_checkpoint
    force = bool(cfg.get("force", False))
    status, why = effective_status(record or {})
    if status == "running" and rank_zero:
        raise ConfigError(f"{out} is in use by a running run ({why}). Fix: wait for it, or choose another "
                          "hydra.run.dir / hydra.sweep.dir.")
    checkpoints = out / "checkpoints"
    valuable = status == "completed" or any(checkpoints.glob("*.ckpt"))
    same = record is not None and record.get("config_id") == plan.config_id
    if not same and valuable and not force:
        what = (f"a run of another configuration ({differences(out, cfg)})" if record and record.get("config_id")
                else "checkpoints or results of a run without a recorded configuration")
        raise ConfigError(f"{out} holds {what}; refusing to mix them. Fix: choose another hydra.run.dir / "
                          "hydra.sweep.dir, or force=true to discard that run and train this configuration there.")
    if same and status == "completed" and not force:
        log.info("%s holds a completed run of this configuration: its recorded results, no training "
                 "(force=true trains it again).", out)
        plan.completed = record
        return True
    plan.purge_step = 0
    if rank_zero:  # no other process writes here (a live one was refused): unfinished writes are a dead one's
        for partial in checkpoints.glob(".*.tmp"):
            partial.unlink(missing_ok=True)
    if same and not force:
        found = newest_complete_checkpoint(checkpoints, quarantine=rank_zero)
        if found is not None:
            path, checkpoint = found
            log.info("%s: resuming this configuration's %s run (%s) from %s (epoch %d, step %d).", out, status,
                     why or "no reason recorded", path.name, checkpoint.get("epoch", -1),
                     checkpoint.get("global_step", 0))
            plan.ckpt_path, plan.checkpoint = str(path), checkpoint
            plan.purge_step = int(checkpoint.get("global_step", 0)) + 1  # keep the checkpointed epoch's own points
            return True
        log.info("%s: this configuration's %s run has no complete checkpoint yet: training starts from the "
                 "beginning.", out, status)
    elif force:
        log.info("force=true: discarding the run in %s and training from the beginning.", out)
    elif record is not None:
        log.info("%s: its %s run of another configuration left nothing to keep: this one starts there.", out, status)
    if rank_zero:
        discard_checkpoints(checkpoints)
    return False


def plan_from_ckpt_path(plan: Plan, cfg: DictConfig, ckpt_path: str | None) -> Plan:
    """A run starting in an empty folder: from scratch, from a checkpoint file, or from another run's folder."""
    from lstm_zoo.checkpoints import load_checkpoint_or_older, newest_complete_checkpoint
    if ckpt_path is None or str(ckpt_path) == "last":  # "last": this folder's own checkpoint, handled before
        return plan
    given = Path(str(ckpt_path)).expanduser()
    if given.is_file():
        path, plan.checkpoint = load_checkpoint_or_older(given)
        plan.ckpt_path = str(path)
        return plan
    if not given.is_dir():
        raise CheckpointError(f"ckpt_path: no checkpoint at {given}. Fix: pass a .ckpt file or a run folder "
                              "holding checkpoints/, e.g. ckpt_path=outputs/runs/<run>.")
    other = read_record(given)
    if other is not None and other.get("config_id"):
        status, why = effective_status(other)
        if other["config_id"] != plan.config_id:
            raise ConfigError(f"ckpt_path={given} holds a run of another configuration ({differences(given, cfg)}). "
                              "Fix: run it with that run's configuration, or pass one of its .ckpt files to start "
                              "from those weights with this one.")
        if status == "running":
            raise ConfigError(f"ckpt_path={given} is still running ({why}). Fix: wait for it to finish.")
        if status == "completed":
            log.info("ckpt_path=%s holds a completed run of this configuration: its recorded results, no training.",
                     given)
            plan.completed = {**other, "results_from": str(given)}
            return plan
    found = newest_complete_checkpoint(given / "checkpoints", quarantine=False) or \
        newest_complete_checkpoint(given, quarantine=False)
    if found is None:
        if other is not None:
            log.info("ckpt_path=%s holds no complete checkpoint yet: training starts from the beginning.", given)
            return plan
        raise CheckpointError(f"ckpt_path: no checkpoint in {given}. Fix: pass a .ckpt file or a run folder "
                              "holding checkpoints/, e.g. ckpt_path=outputs/runs/<run>.")
    plan.ckpt_path, plan.checkpoint = str(found[0]), found[1]
    return plan


def resume_command(out: Path) -> str:
    """The command that resumes the run in `out`: this process's command line with its folder pinned, which makes
    the next run start in that folder (`plan_run`) instead of a new timestamped one. For a sweep, the sweep folder."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    folder = f"hydra.sweep.dir={Path(HydraConfig.get().sweep.dir).resolve()}" if multirun else f"hydra.run.dir={out}"
    if multirun and not {"-m", "--multirun"} & set(sys.argv):  # a launcher's worker process: not the user's command
        return f"the sweep's command with {shlex.quote(folder)}"
    args = [a for a in sys.argv[1:] if not a.lstrip("+~").startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    return shlex.join(["python", sys.argv[0], *args, folder])


def discard_checkpoints(folder: Path) -> None:
    """Remove a run's checkpoints (complete, torn or quarantined) before training again from the beginning."""
    for path in [*folder.glob("*.ckpt"), *folder.glob("*.torn")]:
        path.unlink(missing_ok=True)


def record_hydra_files(out: Path, cfg: DictConfig) -> None:
    """Keep the configuration of the run that owns `out` (Hydra rewrites .hydra/ at every start, refused ones too)."""
    recorded = out / ".hydra" / "recorded"
    recorded.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, recorded / "config.yaml")
    for name in HYDRA_FILES[1:]:
        if (out / ".hydra" / name).is_file():
            shutil.copy2(out / ".hydra" / name, recorded / name)


def restore_hydra_files(out: Path) -> None:
    """Put back the .hydra/ files of the run that owns `out`, which a refused start overwrote."""
    recorded = out / ".hydra" / "recorded"
    for name in HYDRA_FILES:
        if (recorded / name).is_file() and (out / ".hydra" / name).is_file():
            shutil.copy2(recorded / name, out / ".hydra" / name)
