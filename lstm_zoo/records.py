"""What a run leaves on disk, complete or absent, and its record: who runs it, and whether it still lives.

- `atomic_file` and `write_json` write files that are complete or absent, never torn (checkpoints too:
  `lstm_zoo.checkpoints.AtomicCheckpointIO`).
- `RunRecord` keeps `metrics.json` honest: `running` with the process id, host and a heartbeat every 30 s, then
  `completed`, `failed` or `interrupted`; `effective_status` tells a `running` record whose process died without
  a word (SIGKILL, out-of-memory killer, pre-emption) as interrupted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import IO

import lstm_zoo

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 4 * HEARTBEAT_SECONDS  # a record from another host with no heartbeat for this long is dead


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A file that appears at `path` complete or not at all: written beside it, synced to disk, renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows, within one folder (one file system)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, payload: dict) -> None:
    """JSON with NaN written as null (undefined), never as an invalid NaN token; atomic."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in payload.items()}
    with atomic_file(path) as f:
        f.write((json.dumps(clean, indent=2, default=str) + "\n").encode())


def git(root: Path, *args: str) -> str | None:
    """`git -C root <args>`'s output; None where git or the checkout is missing (an installed package)."""
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True, timeout=30).stdout \
            .decode(errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None


def checkout(root: Path) -> tuple[str | None, bool | None, str | None]:
    """(commit, dirty, diff hash) of the git checkout whose top folder is `root`; Nones when it is not one.

    dirty: tracked files differ from the commit; diff hash: a short hash of `git diff HEAD` (None when clean), so
    two dirty trees with the same changes get the same hash. Untracked files are not covered (`git add` them).
    """
    top = git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top.strip()).resolve() != root.resolve():  # e.g. a venv inside some other checkout
        return None, None, None
    commit, diff = git(root, "rev-parse", "HEAD"), git(root, "diff", "--no-color", "--no-ext-diff", "--binary", "HEAD")
    if commit is None or diff is None:
        return None, None, None
    return commit.strip(), bool(diff), hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else None


@cache
def code_version() -> dict:
    """The code a run ran: lstm_zoo's version and git checkout (`checkout`), and the python, torch and lightning
    versions. Computed once per process: the code it runs was imported when it started.

    `id` is what the leaderboard compares ("the same code"): the commit and the diff hash (the package version
    outside a git checkout), torch's and lightning's versions.
    """
    import lightning  # here, not at the top: sweeps and scripts/compare.py read records without loading Lightning
    import torch

    commit, dirty, diff_hash = checkout(Path(lstm_zoo.__file__).resolve().parents[1])
    source = f"lstm_zoo {lstm_zoo.__version__}"
    if commit:
        source = f"git {commit[:12]}" + (f"+diff {diff_hash}" if dirty else "")
    return {"id": f"{source}, torch {torch.__version__}, lightning {lightning.__version__}",
            "lstm_zoo": lstm_zoo.__version__, "git_commit": commit, "git_dirty": dirty, "git_diff": diff_hash,
            "python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__}


def run_code(resumed_from: str | None) -> dict:
    """This process's `code_version`, for a run resuming `resumed_from`: when that checkpoint's run started with other
    code, its `id` says so (`started_with`), so the leaderboard takes the run for neither code alone."""
    code = code_version()
    if resumed_from is None:
        return code
    folder = Path(resumed_from).parent
    earlier = (read_record(folder.parent if folder.name == "checkpoints" else folder) or {}).get("code") or {}
    started = earlier.get("started_with") or earlier.get("id")
    if started is None or started == code["id"]:
        return code
    log.warning("resuming a run that started with other code (%s; now %s): its results mix both.", started,
                code["id"])
    return {**code, "started_with": started, "id": f"{code['id']}, resuming a run started with {started}"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def seconds_since(stamp: str | None) -> float:
    try:
        return (datetime.now(timezone.utc) - datetime.fromisoformat(str(stamp))).total_seconds()
    except ValueError:
        return math.inf


def process_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc; None where there is no /proc entry."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]  # fields 3 and 22 of proc(5), counted after the command name in parentheses


def this_process() -> dict:
    """Who runs a run: pid, host, the pid's start time (tells a reused pid apart) and the scheduler's job id."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    stat = process_stat(os.getpid())
    return {"pid": os.getpid(), "host": socket.gethostname(), "process_start": stat and stat[1], "job": job}


def gone(record: dict) -> str | None:
    """Why the process behind a `running` record is no longer running; None if it may still be."""
    process = record.get("process") or {}
    me, pid, host = this_process(), process.get("pid"), process.get("host")
    silent = seconds_since(process.get("heartbeat"))
    dead = (f"its process (pid {pid} on {host}) ended without a word (SIGKILL: out of memory, pre-emption, or its "
            f"machine stopped); last heartbeat {process.get('heartbeat')}")
    if host == me["host"]:
        if not isinstance(pid, int) or pid == me["pid"]:
            return dead
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return dead
        except PermissionError:
            pass  # another user's live process
        stat = process_stat(pid)
        if stat is None:  # no /proc (macOS): a reused pid shows as a silent heartbeat
            return dead if silent > STALE_AFTER_SECONDS else None
        return dead if stat[0] == "Z" or stat[1] != process.get("process_start") else None
    if process.get("job") and process.get("job") == me["job"]:
        return dead  # the scheduler re-queued this very job on another node
    return dead if silent > STALE_AFTER_SECONDS else None


def read_record(folder: Path) -> dict | None:
    """A run folder's metrics.json, or None (absent or unreadable)."""
    try:
        record = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def effective_status(record: dict) -> tuple[str, str | None]:
    """(status, why): a `running` record whose process is gone is `interrupted`; a live one says who runs it."""
    status = str(record.get("status", "unknown"))
    if status == "running":
        why = gone(record)
        if why:
            return "interrupted", why
        process = record.get("process") or {}
        return status, f"pid {process.get('pid')} on {process.get('host')}, last heartbeat {process.get('heartbeat')}"
    return status, record.get("error")


class RunRecord:
    """metrics.json of a live run: `running`, the config id, and under `process` who runs it (pid, host, the pid's
    start time, the scheduler's job id), what it resumed from and a heartbeat every 30 s; then its final status.

    Written on rank 0 only (`write=False` elsewhere). The heartbeat is a daemon thread, so it beats through data
    loading, validation and testing too; `finish` stops it before writing the final status.
    """

    def __init__(self, out: Path, config_id: str, resumed_from: str | None, write: bool = True) -> None:
        self.path, self.write, self.config_id = out / "metrics.json", write, config_id
        self.process = {**this_process(), "resumed_from": resumed_from, "started": now(), "heartbeat": now()}
        self.code = run_code(resumed_from) if write else code_version()
        self._lock, self._stop = threading.Lock(), threading.Event()
        if write:
            self._write({"status": "running"})
            threading.Thread(target=self._beat, name="lstm_zoo-heartbeat", daemon=True).start()

    def _write(self, metrics: dict) -> None:
        self.process["heartbeat"] = now()
        write_json(self.path, {**metrics, "config_id": self.config_id, "code": self.code, "process": self.process})

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                if not self._stop.is_set():
                    self._write({"status": "running"})

    def finish(self, status: str, metrics: dict, error: str | None = None) -> None:
        """Stop the heartbeat; set `metrics["status"]` and write the metrics, the error and the process record."""
        self._stop.set()
        metrics["status"] = status
        with self._lock:
            self.process["finished"] = now()
            if self.write:
                self._write({**metrics, **({"error": error} if error else {})})


def remove_empty_run_folder(folder: Path) -> bool:
    """Remove a run folder that holds nothing but what Hydra writes at every start (`.hydra/`, the `*.log`): the
    folder of a command that failed before it wrote anything, whose one-line error the terminal already shows."""
    if not folder.is_dir() or any(p.name != ".hydra" and p.suffix != ".log" for p in folder.iterdir()):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def record_failure(folder: Path, error: str) -> None:
    """Record the run in `folder` as failed with `error`, for a process that died before it could; keeps its config
    id, so a re-run resumes it. A final status the run wrote itself is kept."""
    record = read_record(folder) or {}
    if record.get("status") in (None, "running"):
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "metrics.json", {**record, "status": "failed", "error": error})


def __getattr__(name: str) -> object:
    """`lstm_zoo.records.AtomicCheckpointIO`, its former place, still names it: run folders' recorded configs do."""
    if name == "AtomicCheckpointIO":
        from lstm_zoo.checkpoints import AtomicCheckpointIO
        return AtomicCheckpointIO
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
