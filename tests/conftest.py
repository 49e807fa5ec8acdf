"""Shared fixtures: a small synthetic price CSV, composed Hydra configs, and one trained run per model for the session.

The helpers themselves live in tests/helpers.py (importable as `tests.helpers`, or `conftest` for older tests)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per pytest-xdist worker and per subprocess it starts

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tests.helpers import (  # noqa: E402, F401  (re-exported: tests import these from conftest)
    CONF,
    FAST,
    MODELS,
    ROOT,
    cli,
    compose_entry,
    compose_train,
    fast,
    fitted_models,
    model_fields,
    read_metrics,
    sweep_jobs,
    trained_models,
    write_prices_csv,
    write_tickers_csv,
)

torch.set_num_threads(1)


@pytest.fixture
def prices_csv(tmp_path: Path) -> Path:
    """Three years of clean synthetic prices: train 2020-2021, test 2022 by default."""
    return write_prices_csv(tmp_path / "prices.csv")


@pytest.fixture
def fast_cfg(tmp_path: Path, prices_csv: Path):
    """Factory: a tiny, fast run on the synthetic CSV, plus any extra overrides."""

    def make(*overrides: str) -> DictConfig:
        return compose_train(["data=csv", f"data.path={prices_csv}", *FAST, *overrides], tmp_path / "run")

    return make


def build_once(tmp_path_factory: pytest.TempPathFactory, name: str, build) -> Path:
    """The folder `name`, made by `build(folder)` once per test session: under pytest-xdist the workers share it
    (the first builds it under a file lock, the others wait and read it)."""
    from filelock import FileLock  # a dependency of torch

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: the session's folder
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            folder.mkdir(parents=True, exist_ok=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def session_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`prices_csv`'s file, written once for the session's shared runs."""
    return build_once(tmp_path_factory, "session_data", lambda d: write_prices_csv(d / "prices.csv")) / "prices.csv"


SHARED_RUN = ["data.horizon=2", "trainer.log_every_n_steps=1"]  # what every shared run adds to fast(name)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, session_csv: Path):
    """Factory: the run folder of `model=<name>` (+ `extra` overrides) trained once per session with `fast(name)`
    and SHARED_RUN on `session_csv`; the zoo, export, predict and interval tests read it and must not write into it."""
    from lstm_zoo.pipeline import run

    def get(name: str, *extra: str) -> tuple[Path, dict]:
        key = "_".join([name, *extra]).translate(str.maketrans("=[],.", "-____"))
        out = build_once(tmp_path_factory, f"run_{key}", lambda d: run(compose_train(
            ["data=csv", f"data.path={session_csv}", *fast(name), *SHARED_RUN, *extra], d)))
        return out, read_metrics(out)

    return get


SWEEP = ["model=vanilla,gru", "seed=1,2", "data.features=[High,Low]", "data.horizon=2"]  # the shared sweep's axes


@pytest.fixture(scope="session")
def real_sweep(tmp_path_factory: pytest.TempPathFactory, session_csv: Path) -> Path:
    """A real `train.py -m` sweep, run once per session under the joblib launcher (2 workers): SWEEP's 4 jobs on
    `session_csv` with FAST. Tests read it; one that writes into it works on a copy."""
    def sweep(root: Path) -> None:
        result = cli("train.py", ["-m", *SWEEP, "data=csv", f"data.path={session_csv}", *FAST,
                                  "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep"],
                     cwd=root, timeout=600, check=True)
        (root / "sweep" / "console.log").write_text(result.stdout)  # what the sweep printed, for tests to read

    return build_once(tmp_path_factory, "real_sweep", sweep) / "sweep"


MULTIPROCESS = ("test_ddp_cpu.py", "test_interrupt_resume.py", "test_sweep_failures.py")  # DDP ranks, joblib workers


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for pytest-xdist's `--dist loadgroup`: the tests of one session-scoped run (trained_run, real_sweep)
    share one worker, so it is trained once; tests that start several training processes at once run one after
    the other on one worker, so two of them never share the 2 cores."""
    for item in items:
        shared = [f for f in ("real_sweep", "trained_run") if f in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
        elif item.path.name in MULTIPROCESS or "joblib" in item.name:
            item.add_marker(pytest.mark.xdist_group("multiprocess"))
