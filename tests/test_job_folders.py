"""Sweep job folders hold no `=` or `,`: a checkpoint path copied from a multirun folder works as pasted."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from lstm_zoo.naming import job_folder_name
from tests.helpers import FAST, run_main


@pytest.mark.parametrize("overrides, folder", [
    ("model-stacked_seed-1", "model-stacked_seed-1"),
    ("data.features-[High,Low]_model-gru", "data.features-High+Low_model-gru"),
    ("~callbacks.forecast_plot_seed-0", "no-callbacks.forecast_plot_seed-0"),
    ("data.ticker-'A B'_x-${data.window}_p-/tmp/a:b", "data.ticker-A-B_x--data.window_p--tmp-a-b"),
])
def test_job_folder_names_parse_unquoted_in_an_override(overrides, folder):
    assert job_folder_name(overrides) == folder
    path = f"outputs/multirun/2026-01-01_10-00-00-000001/3_{folder}/checkpoints/last.ckpt"
    parsed = OverridesParser.create().parse_overrides([f"ckpt_path={path}"])[0]
    assert parsed.key_or_group == "ckpt_path" and parsed.value() == path
    long = [job_folder_name(f"seed-{seed}_" + "model.hidden_size-8_" * 20) for seed in (1, 2)]
    assert len(long[0]) == 160 and long[0] != long[1]  # cut under the file system's 255, still unique
    assert long[0] == job_folder_name("seed-1_" + "model.hidden_size-8_" * 20)  # and deterministic


@pytest.mark.slow
def test_a_path_copied_from_a_real_sweep_works_in_eval_predict_export_and_resume(real_sweep, session_csv, tmp_path):
    jobs = sorted(p.name for p in real_sweep.iterdir() if p.is_dir())  # model=vanilla,gru x seed=1,2 (conftest.SWEEP)
    assert len(jobs) == 4 and [j[:2] for j in jobs] == ["0_", "1_", "2_", "3_"]
    assert not any(c in "".join(jobs) for c in "=,[]'\" ")
    assert "data.features-High+Low" in jobs[1] and "model-vanilla" in jobs[1] and "seed-2" in jobs[1]
    run = os.path.relpath(real_sweep / jobs[1], tmp_path)  # relative, as a user copies it from `ls`
    data = ["data=csv", f"data.path={session_csv}"]

    run_main("eval.py", [f"ckpt_path={run}/checkpoints/last.ckpt", *data, "hydra.run.dir=eval"], cwd=tmp_path,
             check=True)
    scored = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = json.loads((tmp_path / run / "metrics.json").read_text())
    assert scored["status"] == "completed" and scored["test/rmse"] == pytest.approx(trained["test/rmse"], rel=1e-6)

    out = run_main("predict.py", [f"ckpt_path={run}", *data, "hydra.run.dir=predict"], cwd=tmp_path, check=True).stdout
    forecast = pd.read_csv(tmp_path / "predict" / "forecast.csv")
    assert forecast["date"].tolist() == ["2023-01-03", "2023-01-04"]  # XNYS: 2023-01-02 was a holiday
    assert "split-conformal from" in out and "lower_80" in out

    for fmt, file in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        run_main("export.py", [f"ckpt_path={run}/checkpoints/last.ckpt", f"format={fmt}",
                               f"hydra.run.dir=export_{fmt}"], cwd=tmp_path, check=True)
        assert (tmp_path / f"export_{fmt}" / file).stat().st_size > 0
        assert json.loads((tmp_path / f"export_{fmt}" / "model.json").read_text())["parity_max_abs_diff"] < 1e-5

    same = ["model=vanilla", *data, *FAST, "data.features=[High,Low]", "data.horizon=2"]
    # a checkpoint file: continue from its weights under this configuration
    run_main("train.py", [f"ckpt_path={run}/checkpoints/last.ckpt", *same, "trainer.max_epochs=2",
                          "hydra.run.dir=resumed"], cwd=tmp_path, check=True)
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs"] == 2
    run_main("train.py", [f"ckpt_path={run}", *same, "seed=2", "hydra.run.dir=again"], cwd=tmp_path,
        check=True)  # the run folder
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["status"] == "completed" and again["test/rmse"] == trained["test/rmse"]  # its recorded results


def test_only_a_folder_holding_nothing_but_hydras_files_is_removed(tmp_path):
    from lstm_zoo.records import remove_empty_run_folder

    empty, kept = tmp_path / "empty", tmp_path / "kept"
    for folder in (empty, kept):
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("seed: 1\n")
        (folder / "predict.log").write_text("[ERROR] - CheckpointError: ...\n")
    (kept / "metrics.json").write_text('{"status": "failed", "error": "ConfigError: ..."}')
    assert remove_empty_run_folder(empty) and not empty.exists()
    assert not remove_empty_run_folder(kept) and (kept / "metrics.json").exists()  # a record saying why stays
    assert not remove_empty_run_folder(tmp_path / "missing")


@pytest.mark.slow
def test_a_command_that_fails_before_writing_anything_leaves_no_folder(tmp_path):
    for script, args in (("predict.py", [f"ckpt_path={tmp_path / 'nope'}"]), ("export.py", ["format=tflite"])):
        result = run_main(script, args, cwd=tmp_path)
        assert result.returncode == 1 and "Error: " in result.stdout, result.stdout[-3000:]
        assert not list((tmp_path / "outputs").rglob("*.log")), script  # its timestamped folder is gone
    result = run_main("train.py", ["model.dropout=2"], cwd=tmp_path)
    (run,) = (tmp_path / "outputs" / "runs").iterdir()  # a training run keeps its folder, with the record of why
    assert result.returncode == 1 and json.loads((run / "metrics.json").read_text())["status"] == "failed"
