"""Every run records the code it ran; the leaderboard refuses to pool runs of different code unless told to."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import lightning
import pytest
import torch
from omegaconf import OmegaConf

from lstm_zoo import records
from lstm_zoo.evaluation.compare import main as compare_main
from lstm_zoo.evaluation.leaderboard import compare
from lstm_zoo.pipeline import run

ROOT = Path(__file__).resolve().parents[1]


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def test_a_checkout_is_told_by_its_commit_and_the_hash_of_its_changes(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-q", "-m", "one")
    commit, dirty, diff = records.checkout(tmp_path)
    assert len(commit) == 40 and dirty is False and diff is None
    (tmp_path / "a.py").write_text("x = 2\n")
    changed = records.checkout(tmp_path)
    assert changed[:2] == (commit, True) and len(changed[2]) == 12
    assert records.checkout(tmp_path) == changed  # the same changes, the same hash
    (tmp_path / "a.py").write_text("x = 3\n")
    assert records.checkout(tmp_path)[2] != changed[2]  # other changes, another hash
    assert records.checkout(tmp_path / "sub") == (None, None, None)  # not a checkout's top: unknown, no crash
    outside = tmp_path.parent / f"{tmp_path.name}_plain"
    outside.mkdir()
    assert records.checkout(outside) == (None, None, None)


def test_without_git_the_code_is_the_package_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "git", lambda *args: None)  # git missing, or an installed (non-checkout) package
    records.code_version.cache_clear()
    try:
        code = records.code_version()
    finally:
        records.code_version.cache_clear()
    assert code["git_commit"] is None and code["git_dirty"] is None and code["git_diff"] is None
    assert code["id"] == f"lstm_zoo 0.1.0, torch {torch.__version__}, lightning {lightning.__version__}"


def test_a_run_resumed_with_other_code_says_so(tmp_path: Path) -> None:
    now = records.code_version()["id"]
    last = str(tmp_path / "checkpoints" / "last.ckpt")
    assert records.run_code(None)["id"] == now and records.run_code(last)["id"] == now  # no record: nothing to say
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "interrupted", "code": {"id": now}}))
    assert records.run_code(last)["id"] == now  # the same code
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "interrupted", "code": {"id": "git aaaa"}}))
    code = records.run_code(last)
    assert code["id"] == f"{now}, resuming a run started with git aaaa" and code["started_with"] == "git aaaa"
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "interrupted", "code": code}))
    assert records.run_code(last) == code  # resumed once more with this code: still started with the other one


@pytest.fixture
def completed_run(fast_cfg, tmp_path: Path) -> Path:
    cfg = fast_cfg()
    run(cfg)
    OmegaConf.save(cfg, tmp_path / "run" / ".hydra" / "config.yaml")  # as Hydra writes it (the leaderboard reads it)
    return tmp_path / "run"


def test_a_run_records_the_code_it_ran_and_mixed_code_is_not_pooled(completed_run: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    record = json.loads((completed_run / "metrics.json").read_text())
    code = record["code"]
    assert record["status"] == "completed"
    assert code["torch"] == torch.__version__ and code["lightning"] == lightning.__version__ and code["python"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # the tests run from a git checkout (not from an unpacked source archive)
        assert code["git_commit"] == head.stdout.strip() and isinstance(code["git_dirty"], bool)
        assert code["id"].startswith(f"git {code['git_commit'][:12]}")

    sweep = tmp_path / "sweep"
    for name in ("0_seed-1", "1_seed-2"):
        shutil.copytree(completed_run, sweep / name)
    other = sweep / "1_seed-2" / "metrics.json"
    record["code"] = {**code, "git_commit": "f" * 40, "id": "git ffffffffffff, torch 2.0, lightning 2.0"}
    other.write_text(json.dumps(record))
    with pytest.raises(SystemExit) as refused:
        compare(sweep, ["model"])
    message = str(refused.value)
    assert "\n" not in message and "ran different code" in message and "--allow-mixed-code" in message
    assert f"{code['id']} (0_seed-1)" in message and "git ffffffffffff, torch 2.0, lightning 2.0 (1_seed-2)" in message
    with pytest.raises(SystemExit, match="ran different code"):  # the command line refuses it too
        compare_main([str(sweep)])

    compare_main([str(sweep), "--allow-mixed-code"])
    assert "Runs of different code pooled (--allow-mixed-code)" in (sweep / "leaderboard.md").read_text()
    capsys.readouterr()
    record["code"] = code  # the same code again: pooled without the flag
    other.write_text(json.dumps(record))
    assert compare(sweep, ["model"])["seeds"].iloc[0] == 2
