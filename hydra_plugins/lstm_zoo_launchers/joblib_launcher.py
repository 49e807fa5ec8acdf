"""`hydra/launcher=joblib`: hydra-joblib-launcher, made to survive a worker killed with SIGKILL.

When one loky worker dies (the out-of-memory killer, a pre-empted machine), stock joblib raises
`TerminatedWorkerError`: loky kills the other running jobs with it, the queued jobs never start and the sweep
aborts. This launcher keeps the results that came back, re-runs each job that was running, alone (it resumes from
its newest checkpoint: lstm_zoo.lifecycle), to find the one whose process dies; that job is recorded as failed
in its folder, and the other jobs run to the end. Joblib options are the stock plugin's.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

try:
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as StockJoblibLauncher
except ImportError:  # the optional [sweep] extra is not installed
    StockJoblibLauncher = object

log = logging.getLogger(__name__)


class WorkerKilledError(RuntimeError):
    """A sweep job whose process was killed from outside, also when it ran alone."""


def execute_job(number: int, overrides: Sequence[str], hydra_context: HydraContext, config: DictConfig,
                task_function: TaskFunction, singleton_state: dict[Any, Any], started: str) -> tuple[int, JobReturn]:
    """The stock plugin's `execute_job`, noting first (a file in `started`) that job `number` runs, and where."""
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{number}"
        sweep_config.hydra.job.num = number
    HydraConfig.instance().set_config(sweep_config)
    marker = Path(started) / str(number)
    marker.write_text(str(Path(str(sweep_config.hydra.sweep.dir), str(sweep_config.hydra.sweep.subdir)).absolute()))
    ret = run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    marker.unlink()
    return number, ret


class JoblibLauncher(StockJoblibLauncher):
    """hydra-joblib-launcher's JoblibLauncher; a killed worker costs one job at most, never the sweep."""

    def __init__(self, **kwargs: Any) -> None:
        if StockJoblibLauncher is object:
            raise ImportError("hydra/launcher=joblib needs hydra-joblib-launcher. Fix: pip install -e '.[sweep]'")
        super().__init__(**kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
        from joblib import Parallel, delayed
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        options = {**self.joblib, "backend": "loky"}  # threads are incompatible with Hydra (as in the stock plugin)
        process_joblib_cfg(options)
        log.info("Joblib.Parallel(%s) is launching %d jobs", ",".join(f"{k}={v}" for k, v in options.items()),
                 len(job_overrides))
        log.info("Launching jobs, sweep output dir : %s", sweep_dir)
        jobs = {initial_job_idx + i: list(overrides) for i, overrides in enumerate(job_overrides)}
        for number, overrides in jobs.items():
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        state, results = Singleton.get_state(), {}

        with tempfile.TemporaryDirectory(prefix="lstm_zoo_sweep_") as started:
            def run_in_parallel(numbers: list[int]) -> TerminatedWorkerError | None:
                """Run jobs `numbers` (each in a worker, with the sweep's threads per worker); keeps what returns."""
                tasks = (delayed(execute_job)(n, jobs[n], self.hydra_context, self.config, self.task_function, state,
                                              started) for n in numbers)
                try:
                    for number, ret in Parallel(**options, return_as="generator_unordered")(tasks):
                        results[number] = ret
                except TerminatedWorkerError as err:
                    return err
                return None

            pending = sorted(jobs)
            while pending:
                killed = run_in_parallel(pending)
                if killed is None:
                    break
                running = [n for n in pending if n not in results and (Path(started) / str(n)).is_file()]
                if not running:  # no job had started: nothing to pin it on
                    raise killed
                log.warning("A worker process was killed (SIGKILL: out of memory, pre-emption?) while jobs %s ran; "
                            "re-running each alone to find the one that dies.", ", ".join(f"#{n}" for n in running))
                for number in running:
                    marker = Path(started) / str(number)
                    folder = Path(marker.read_text())
                    marker.unlink()
                    if run_in_parallel([number]) is not None:  # one job alone still kills its worker
                        results[number] = self.killed_job(number, jobs[number], folder)
                pending = [n for n in pending if n not in results]
        return [results[n] for n in sorted(jobs)]

    @staticmethod
    def killed_job(number: int, overrides: list[str], folder: Path) -> JobReturn:
        """The result of a job whose process dies even alone: recorded as failed in its folder; the sweep goes on."""
        from lstm_zoo.records import record_failure

        error = WorkerKilledError(f"job #{number}: its process was killed (SIGKILL) twice, the second time running "
                                  f"alone (out of memory?); recorded as failed in {folder}. Fix: re-run the sweep "
                                  "(same command, same hydra.sweep.dir) to resume it from its newest checkpoint.")
        record_failure(folder, f"{type(error).__name__}: {error}")
        log.error("%s", error)
        return JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=error)
