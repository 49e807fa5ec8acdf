"""pytest-xdist groups for `--dist loadgroup` (make test, make test-full), and the order in which tests start.

Loaded by tests/conftest.py; a plugin of its own (`-p tests.xdist_groups`) so that a test can check it on a
throwaway test suite without importing torch.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

MULTIPROCESS = ("test_ddp_cpu.py", "test_sweep_failures.py")  # DDP ranks, joblib workers, two runs at once
MODULE_RUNS = ("test_interrupt_resume.py",)  # a module-scoped run in a subprocess: its tests share one worker
FIRST = ("slurm", "multiprocess")  # the longest chains of one worker: started first, the rest fills in around them


def xdist_group(item: pytest.Item) -> str | None:
    """The item's pytest-xdist group, named as xdist names it (several marks: their names joined by `_`)."""
    names = {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")}
    return "_".join(sorted(names)) or None


def start_order(item: pytest.Item) -> int:
    group = xdist_group(item)
    if group in FIRST:
        return FIRST.index(group)
    return len(FIRST) + (item.get_closest_marker("slow") is None)  # then the other slow tests, then the fast ones


@pytest.hookimpl(wrapper=True)  # around pytest-xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> Generator[None, None, None]:
    """Groups for pytest-xdist's `--dist loadgroup`: the tests of one session-scoped run (trained_run, real_sweep)
    share one worker, so it is trained once (likewise a module's run, MODULE_RUNS); tests that start several
    training processes at once run one after the other on one worker, so two of them never share the 2 cores.
    The longest groups come first (make test passes --no-loadscope-reorder, which keeps this order).

    pytest-xdist 3.8 hands a group to its scheduler as a `@group` suffix of the node id, written into
    `item._nodeid`; pytest >= 9.2 keeps node ids in `item._id`, so that suffix is lost and loadgroup spreads each
    group over all workers. After xdist's hook, the suffix is written where this pytest reads it, if missing."""
    for item in items:
        shared = [f for f in ("real_sweep", "trained_run") if f in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
        elif item.path.name in MULTIPROCESS or "joblib" in item.name:
            item.add_marker(pytest.mark.xdist_group("multiprocess"))
        elif item.path.name in MODULE_RUNS:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
    items.sort(key=start_order)
    yield
    if getattr(config.option, "loadgroup", False):  # set on pytest-xdist's workers under --dist loadgroup
        from _pytest.nodeid import NodeId

        for item in items:
            group = xdist_group(item)
            if group and not item.nodeid.endswith(f"@{group}"):
                item._id = NodeId.parse(f"{item.nodeid}@{group}")
