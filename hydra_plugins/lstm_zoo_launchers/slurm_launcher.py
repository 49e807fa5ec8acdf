"""`hydra/launcher=slurm` and `slurm_cpu`: hydra-submitit-launcher, made to finish a sweep whatever one job does.

The stock launcher waits for the jobs in order and raises at the first that failed: the sweep command ends while
the other jobs still run, and no record says why the failed one ended (a SLURM time limit leaves no Python
traceback). This one waits for every job; a job that SLURM ended (time limit, node failure, cancelled) is recorded
as failed in its folder with SLURM's reason, and the command exits 1 after the last job. Re-running the same
command with the same `hydra.sweep.dir` submits only the jobs whose folder holds no completed run of their
configuration; the others resume from their newest checkpoint (lstm_zoo.lifecycle).

submitit reads job states with `sacct`, which fails on a cluster without accounting (a warning every few seconds,
and a job killed by SLURM is then never seen to end): there, job states come from `squeue`.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, open_dict

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as StockSlurmLauncher
    from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob
except ImportError:  # the optional [sweep] extra is not installed
    StockSlurmLauncher, SlurmInfoWatcher, SlurmJob = object, object, None

log = logging.getLogger(__name__)


class SlurmJobError(RuntimeError):
    """A sweep job that SLURM ended before it could return (time limit, node failure, cancelled)."""


class QueueWatcher(SlurmInfoWatcher):
    """submitit's job-state watcher, reading `squeue` once `sacct` has failed (accounting disabled).

    squeue lists pending and running jobs, and finished ones for MinJobAge seconds (300 by default) with their
    final state; a job it no longer lists has ended.
    """

    use_squeue = False

    def update(self) -> None:
        if not self.use_squeue:
            command = self._make_command()
            if command is None:
                return
            try:
                subprocess.run(command, check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError) as err:
                stderr = getattr(err, "stderr", b"") or b""
                log.info("sacct is not available (%s): job states come from squeue.",
                         stderr.decode().strip() or err)
                type(self).use_squeue = True
            else:
                return super().update()
        self.update_from_squeue()

    def update_from_squeue(self) -> None:
        watched = self._registered - self._finished
        if not watched:
            return
        self._num_calls += 1
        try:
            listing = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N"],
                                     check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as err:
            log.warning("squeue failed (%s): job states may be stale.", getattr(err, "stderr", "") or err)
            return
        listed = self.read_info("JobID|State|NodeList\n" + listing)
        self._info_dict.update(listed)
        for job_id in watched:
            if job_id not in listed and not self._info_dict.get(job_id, {}).get("State", "").startswith("END"):
                last = self._info_dict.get(job_id, {}).get("State")
                self._info_dict[job_id] = {"JobID": job_id, "State": f"ENDED (last seen {last or 'never'})"}
        self._last_status_check = time.time()
        for job_id in watched:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)


class SlurmLauncher(StockSlurmLauncher):
    """hydra-submitit-launcher's SlurmLauncher; every job is awaited, a job SLURM ended is recorded as failed."""

    def __init__(self, **params: Any) -> None:
        if StockSlurmLauncher is object:
            raise ImportError("hydra/launcher=slurm needs hydra-submitit-launcher. Fix: pip install -e '.[sweep]'")
        super().__init__(**params)
        if not isinstance(SlurmJob.watcher, QueueWatcher):
            SlurmJob.watcher = QueueWatcher(delay_s=600)  # the watcher is a class attribute shared by all jobs

    def job_config(self, number: int, overrides: Sequence[str]) -> tuple[Path, DictConfig]:
        """Job `number`'s folder and its task configuration, as the job itself will compose them."""
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.num = number
        folder = Path(str(sweep_config.hydra.sweep.dir), str(sweep_config.hydra.sweep.subdir))
        with open_dict(sweep_config):
            del sweep_config["hydra"]
        return folder, sweep_config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from lstm_zoo.lifecycle import config_id
        from lstm_zoo.records import read_record

        jobs = {initial_job_idx + i: list(overrides) for i, overrides in enumerate(job_overrides)}
        folders, results = {}, {}
        for number, overrides in jobs.items():
            folders[number], cfg = self.job_config(number, overrides)
            record = read_record(folders[number]) or {}
            if record.get("status") == "completed" and record.get("config_id") == config_id(cfg):
                log.info("#%d: %s holds its completed run: not submitted again.", number, folders[number])
                results[number] = JobReturn(overrides=overrides, status=JobStatus.COMPLETED,
                                            _return_value=record.get("val/rmse"))
        missing = [n for n in jobs if n not in results]
        if not missing:
            return [results[n] for n in sorted(jobs)]
        submitted = self.submit([jobs[n] for n in missing], missing)
        for number, job in zip(missing, submitted):
            try:
                results[number] = job.results()[0]
            except Exception as err:  # submitit: the job ended without a result, or raised
                results[number] = self.failed_job(number, jobs[number], folders[number], job, err)
        return [results[n] for n in sorted(jobs)]

    def submit(self, overrides: list[list[str]], numbers: list[int]) -> list:
        """Submit jobs `numbers` as one job array, as the stock launcher does, without waiting for them."""
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                         slurm_max_num_timeout=self.params["max_num_timeout"])
        queue_keys = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in queue_keys else f"{self._EXECUTOR}_{k}": v
                                      for k, v in self.params.items() if k not in init_keys})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("Submitting %d SLURM jobs, sweep output dir: %s", len(numbers), sweep_dir)
        for number, job_overrides in zip(numbers, overrides):
            log.info("\t#%d : %s", number, " ".join(filter_overrides(job_overrides)))
        state = Singleton.get_state()
        params = [(list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", state) for n, o in zip(numbers, overrides)]
        return executor.map_array(self, *zip(*params))

    @staticmethod
    def failed_job(number: int, overrides: list[str], folder: Path, job: Any, err: Exception) -> JobReturn:
        """A job that ended without returning: recorded as failed in its folder (unless it completed), with why."""
        from lstm_zoo.records import read_record, write_json

        state = job.watcher.get_state(job.job_id, mode="cache")
        record = read_record(folder) or {}
        reason = record.get("error") if record.get("status") == "failed" else None
        error = SlurmJobError(f"job #{number} (SLURM job {job.job_id}, state {state}): "
                              f"{reason or str(err).strip().splitlines()[0]}. Its log: {job.paths.stdout}. Fix: "
                              "re-run the sweep (same command, same hydra.sweep.dir): it resumes from its newest "
                              "checkpoint; a TIMEOUT wants a longer hydra.launcher.timeout_min.")
        if record.get("status") != "completed":
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / "metrics.json", {**record, "status": "failed", "error": str(error)})
        log.error("%s", error)
        return JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=error)
