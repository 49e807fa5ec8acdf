"""`--dist loadgroup` keeps each xdist group on one worker (tests/xdist_groups.py), on a throwaway test suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.helpers import ROOT

GROUPED = """import pytest

@pytest.mark.xdist_group("g")
@pytest.mark.parametrize("i", range(4))
def test_grouped(i):
    pass

@pytest.mark.parametrize("i", range(4))
def test_free(i):
    pass
"""


def test_each_xdist_group_runs_on_one_worker_and_the_long_groups_start_first(tmp_path: Path) -> None:
    (tmp_path / "test_a.py").write_text(GROUPED)
    (tmp_path / "test_b.py").write_text(GROUPED)
    (tmp_path / "test_sweep_failures.py").write_text(GROUPED.replace('@pytest.mark.xdist_group("g")\n', ""))
    # a process by nature (xdist's workers are processes); neither the throwaway suite nor tests.xdist_groups
    # imports torch, so it costs no Lightning import
    result = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder",
                             "-p", "tests.xdist_groups", "-p", "no:cacheprovider", "-v", "-o", "addopts="],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = re.findall(r"\[(gw\d)\][^\n]*PASSED (\S+)", result.stdout)
    assert len(ran) == 24, result.stdout[-3000:]
    workers = defaultdict(set)
    for worker, test in ran:
        workers[test.split("@")[-1] if "@" in test else test].add(worker)
    assert len(workers["g"]) == 1 and len(workers["multiprocess"]) == 1, workers  # a file of MULTIPROCESS: grouped
    free = sorted(test for _, test in ran if "@" not in test)
    assert free == sorted(f"test_{f}.py::test_free[{i}]" for f in "ab" for i in range(4)), ran
    # the group of FIRST starts first: it is the first thing its worker runs (the other worker starts at the same
    # moment, so which of the two reports first is a race)
    (multiprocess_worker,) = workers["multiprocess"]
    assert next(test for worker, test in ran if worker == multiprocess_worker).endswith("@multiprocess"), ran
