"""scripts/benchmark.py: its report prints what was measured (ratios from the interleaved rounds, no targets or
verdicts), its paths outside the repository are arguments with one-line errors, and it runs end to end."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, run_main

spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def model(name: str, epoch_s: float) -> dict:
    return {"model": name, "params": 1000, "epoch_s_median": epoch_s, "windows_per_s": 1e4, "peak_mem_mb": 500.0,
            "test_rmse": 5.0, "persistence_rmse": 1.88}


def results(stacked: float = 1.0, peephole: float = 1.2, tutorial_fit: float = 25, tutorial_rmse: float = 6.0,
            keras_fit: float = 100, keras_rmse: list[float] = (8.0,), keras_steps: int = 1700) -> dict:
    return {"machine": "test", "epochs": 5, "models": [model("stacked", stacked), model("peephole", peephole)],
            "plain_loop": {"epoch_s_median": 1.0},
            "default_job": [{"seed": 0, "wall_s": 30.0, "fit_s": 25.0, "test_rmse": 4.0, "persistence_rmse": 1.88,
                             "epochs": 20}],
            "tutorial": [{"seed": 0, "fit_s": tutorial_fit, "test_rmse": tutorial_rmse, "persistence_rmse": 1.54,
                          "epochs": 20, "steps": 1700, "train_windows": 2709, "params": 71051}],
            "keras": [{"dataset": "kaggle", "fit_s": keras_fit, "test_rmse": rmse, "epochs": 20, "steps": keras_steps,
                       "trainable_params": 71051, "n_train_windows": 2709, "batch_size": 32,
                       "versions": {"backend": "tensorflow", "backend_version": "2.21.0"}} for rmse in keras_rmse]}


def rows(text: str) -> dict[str, list[str]]:
    return {cells[1].strip(): [c.strip() for c in cells[2:-1]]
            for cells in (line.split("|") for line in text.splitlines() if line.startswith("| "))}


def test_the_report_prints_measurements_and_no_verdicts():
    measured = results()
    measured["overhead_ratios"] = [1.30, 1.04, 1.08]
    measured["cells"] = {"repeats": 3, "batches": 82, "ratios": {"min_gru": [0.28, 0.31, 0.25]},
                         "profiles": {"stacked": {"calls_per_batch": 700.0, "top": [["aten::mul", 0.5]]},
                                      "min_gru": {"calls_per_batch": 1400.0, "top": [["aten::bmm", 0.2]]}}}
    text = benchmark.report(measured)
    assert not re.search(r"\b(met|missed|goal|target|stretch)\b", text, re.IGNORECASE), text
    table = rows(text)
    assert table["framework epoch / plain PyTorch epoch (stacked)"] == [
        "1.08x (median of 3 interleaved epochs: 1.30, 1.04, 1.08)"]
    assert table["Keras tutorial fit / lstm_zoo tutorial fit (same data, same optimizer steps)"] == ["4.00x"]
    assert table["lstm_zoo"][-1] == "6.00 (6.00)" and table["Keras"][-1] == "8.00 (8.00)"
    assert table["2 models x 20 epochs (sum of epoch medians x 20)"] == ["0.7 min"]
    assert "Default job (`python train.py`, 20 epochs), 1 seed(s): process 30.0 s, fit 25.0 s" in text
    assert "Plain PyTorch loop (stacked, same batches, train + validation): 1.00 s/epoch" in text


def test_cell_ratios_come_from_the_interleaved_rounds_beside_the_per_model_epochs():
    """Per-model processes say 2.4x (a fast spell for stacked); the interleaved rounds say 1.40x: both are printed,
    the interleaved first; torch's own nn.GRU, no model's default, has no per-model number."""
    measured = results(peephole=2.4)
    measured["cells"] = {"repeats": 3, "batches": 82,
                         "ratios": {"fused_torchscript": [1.52, 1.40, 1.38], "gru_torch": [2.1, 2.0, 2.2]}}
    table = rows(benchmark.report(measured))
    assert table["peephole epoch / stacked epoch"] == [
        "1.40x (median of 3 interleaved rounds: 1.52, 1.40, 1.38); 2.40x from the per-model epochs above"]
    assert table["gru (torch nn.GRU) epoch / stacked epoch"] == ["2.10x (median of 3 interleaved rounds: 2.10, 2.00, "
                                                                  "2.20)"]
    assert "min_gru epoch / stacked epoch" not in table  # measured neither way


def test_a_failed_measurement_is_reported_and_the_per_model_ratio_remains():
    measured = results()
    measured["cells"] = {"error": "RuntimeError: boom"}
    measured["overhead_error"] = "MemoryError"
    measured["keras"] = [{"error": "ModuleNotFoundError: No module named 'tensorflow'"}]
    text = benchmark.report(measured)
    assert "bench_cells failed: RuntimeError: boom" in text and "framework / plain loop failed: MemoryError" in text
    assert "Keras reference failed: ModuleNotFoundError: No module named 'tensorflow'" in text
    assert rows(text)["peephole epoch / stacked epoch"] == ["1.20x from the per-model epochs above"]


def test_the_tutorial_ratio_says_when_the_optimizer_steps_differ():
    table = rows(benchmark.report(results(keras_rmse=[6.0, 10.0, 8.0], keras_steps=1800)))
    assert table["Keras tutorial fit / lstm_zoo tutorial fit (same data, optimizer steps [1700] against Keras' "
                 "[1800])"] == ["4.00x"]
    assert table["Keras"][-1] == "8.00 ± 2.00 (6.00, 10.00, 8.00)"


def test_every_profiled_cell_is_printed_beside_stacked():
    measured = results()
    measured["cells"] = {"repeats": 3, "batches": 82, "ratios": {"slstm": [1.6] * 3, "min_gru": [0.3] * 3},
                         "profiles": {"stacked": {"calls_per_batch": 700.0,
                                                  "top": [["aten::mkldnn_rnn_layer_backward", 0.46]]},
                                      "slstm": {"calls_per_batch": 24000.0,
                                                "top": [["aten::mul", 0.11], ["aten::copy_", 0.07]]},
                                      "min_gru": {"calls_per_batch": 1500.0, "top": [["aten::bmm", 0.2]]}}}
    table = rows(benchmark.report(measured))
    assert table["stacked (nn.LSTM)"] == ["700", "1.0x", "mkldnn_rnn_layer_backward 46%"]
    assert table["slstm"] == ["24,000", "34.3x", "mul 11%, copy_ 7%"]
    assert table["min_gru"] == ["1,500", "2.1x", "bmm 20%"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--keras-python", sys.executable], r"--keras-script \(not given\): the tutorial's Keras script is needed"),
    (["--keras-python", sys.executable, "--keras-script", "/nonexistent/keras_reference.py"],
     r"--keras-script /nonexistent/keras_reference\.py: .* Fix: --keras-script /path/to/keras_reference\.py"),
    (["--keras-python", sys.executable, "--keras-script", __file__],
     r"--tutorial-csv \(not given\): --keras-dataset kaggle needs the tutorial's CSV\. Fix: --tutorial-csv"),
    (["--keras-python", "/nonexistent/python"], r"--keras-python /nonexistent/python: no such file"),
    (["--models", "stacked", "lstmm"], r"--models: unknown lstmm; conf/model has .*stacked"),
])
def test_paths_outside_the_repository_are_arguments_checked_before_anything_runs(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        benchmark.parse(argv)
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(message, error), error


def test_the_kaggle_side_by_side_needs_no_csv_with_the_embedded_data():
    args = benchmark.parse(["--keras-python", sys.executable, "--keras-script", __file__, "--keras-dataset", "bokeh"])
    assert args.keras_script == Path(__file__) and args.tutorial_csv is None
    assert benchmark.tutorial_data("bokeh", None) == ["data.path=null", "data.train_end=2011-12-31",
                                                      "data.test_start=2012-01-01"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit):
        benchmark.parse(["--device", "cuda"])
    assert "--device cuda: no CUDA GPU is usable here" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", benchmark.PRECISIONS)
def test_one_model_is_measured_on_the_gpu(precision: str):
    """On cuda: Lightning hands the model back on the CPU after testing while the windows stay on the GPU; the
    inference measurement must move both, at the run's precision."""
    measured = benchmark.bench_framework("vanilla", "cuda", 1, precision)
    assert measured["windows_per_s"] > 0 and measured["peak_mem_mb"] > 0 and len(measured["epoch_s"]) == 1


@pytest.mark.slow
def test_the_smallest_run_executes_end_to_end(tmp_path: Path):
    out = tmp_path / "bench.json"
    # the script in this process; the model is measured in the child process it starts for each model
    result = run_main("scripts/benchmark.py", ["--models", "vanilla", "--epochs", "1", "--overhead-rounds", "0",
                                               "--cell-rounds", "0", "--skip-default-job", "--out", str(out)],
                      check=True)
    assert "| vanilla | 10,451 |" in result.stdout
    saved = json.loads(out.read_text())
    assert saved["models"][0]["model"] == "vanilla" and saved["report"] in result.stdout
