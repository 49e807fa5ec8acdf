"""export.py: ONNX and TorchScript files that reproduce PyTorch's forecasts, and the JSON that maps them to prices."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from lstm_zoo.checkpoints import data_for_checkpoint, load_forecaster
from lstm_zoo.export import FORMATS, export, run_exported
from lstm_zoo.forecasting import predict
from lstm_zoo.pipeline import run
from tests.helpers import FAST, compose_entry, compose_train, trained_models

MODELS = trained_models()  # the models fit in closed form have tests of their own (test_baselines.py)


@pytest.fixture(autouse=True, scope="module")
def torchlib_registry_built_once():
    """torch.onnx.export builds its operator registry anew on every export (onnxscript re-parses the source of ~500
    torchlib functions: about a third of a small model's export). export.py exports once per process; these tests
    export 15 models in one: the first export builds the registry as export.py does, the others reuse it, unchanged
    (an export only reads it; torch.onnx.export writes into it only for a custom_translation_table)."""
    from torch.onnx._internal.exporter import _registration

    build = _registration.ONNXRegistry.from_torchlib.__func__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_registration.ONNXRegistry, "from_torchlib", classmethod(functools.cache(build)))
        yield


def tiny_run(csv: Path, out: Path, *overrides: str) -> Path:
    run(compose_train(["data=csv", f"data.path={csv}", *FAST, "data.horizon=2", *overrides], out))
    return out


def scaled_test_windows(state: dict) -> torch.Tensor:
    """Every test window of a checkpoint's data (`state`: its data state), scaled as in training: (N, window,
    features)."""
    datamodule = data_for_checkpoint(None, state)  # the data the checkpoint records: the run's CSV
    datamodule.setup("test")
    return torch.cat([batch[0] for batch in datamodule.test_dataloader()])


def check_parity(run_dir: Path, tmp_path: Path) -> torch.Tensor:
    """Both formats, all test windows at once (a batch size the export never saw): PyTorch's forecasts to 1e-5.
    Returns those windows."""
    model, state = load_forecaster(run_dir)
    model.eval()
    windows = scaled_test_windows(state)
    with torch.no_grad():
        expected = model.forecast(windows).numpy()
    for fmt, file in FORMATS.items():
        info = export(compose_entry("export", [f"ckpt_path={run_dir}", f"format={fmt}"], tmp_path / fmt))
        for batch in (windows, windows[:1]):
            got = run_exported(tmp_path / fmt / file, fmt, batch)
            assert got.shape == expected[: len(batch)].shape
            np.testing.assert_allclose(got, expected[: len(batch)], rtol=0, atol=1e-5, err_msg=fmt)
        assert info["parity_max_abs_diff"] < 1e-5
        if fmt == "onnx":  # the file's input: the JSON's shape, its first dimension dynamic and named batch
            dims = onnx.load(tmp_path / fmt / file).graph.input[0].type.tensor_type.shape.dim
            assert [d.dim_param or d.dim_value for d in dims] == info["input"]["shape"]
    return windows


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_model_exports_and_predicts_matching_pytorch_on_the_test_windows(name, trained_run, session_csv,
                                                                               tmp_path):
    run_dir = trained_run(name)[0]  # horizon 2
    check_parity(run_dir, tmp_path)
    frame = predict(compose_entry("predict", [f"ckpt_path={run_dir}", "data=csv", f"data.path={session_csv}"],
                                  tmp_path / "predict"))
    assert len(frame) == 2 and frame.notna().all().all()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vanilla", "encoder_decoder"])  # a linear head, and a head unrolled step by step
def test_quantile_heads_export_their_ordered_quantiles(name, trained_run, tmp_path):
    run_dir = trained_run(name, "model.quantiles=[0.1,0.5,0.9]")[0]  # horizon 2
    windows = check_parity(run_dir, tmp_path)
    layout = json.loads((tmp_path / "onnx" / "model.json").read_text())
    assert layout["output"]["shape"] == ["batch", 2, 3] and layout["output"]["median_index"] == 1
    got = run_exported(tmp_path / "onnx" / "model.onnx", "onnx", windows)
    assert (np.diff(got, axis=-1) >= 0).all()


def test_the_json_alone_maps_the_exported_outputs_to_the_runs_prices(prices_csv, tmp_path):
    """Windows built from the raw CSV with the JSON's scaling, run through the TorchScript file, mapped to prices
    with its target transform: the run's own test forecasts (predictions.csv)."""
    run_dir = tiny_run(prices_csv, tmp_path / "run", "model=vanilla", "data.target_transform=diff",
                       "data.features=[Low,High]")
    export(compose_entry("export", [f"ckpt_path={run_dir}", "format=torchscript"], tmp_path / "ts"))
    layout = json.loads((tmp_path / "ts" / "model.json").read_text())
    assert layout["input"]["features"] == ["Low", "High"] and layout["target_transform"] == "diff"
    prices = pd.read_csv(prices_csv, parse_dates=["Date"]).set_index("Date")
    scaler = layout["scaler"]
    assert scaler["tickers"] == ["IBM"]  # one series: row 0 of the per-ticker lists
    low, high = (np.array(scaler[k][0]) for k in ("data_min", "data_max"))
    scaled = ((prices[scaler["columns"]].to_numpy() - low) / (high - low))[:, : len(layout["input"]["features"])]
    predictions = pd.read_csv(run_dir / "predictions.csv", parse_dates=["date"])
    window = layout["input"]["shape"][1]
    ends = [prices.index.get_loc(d) for d in predictions["date"]]  # each forecast's first target day
    windows = torch.tensor(np.stack([scaled[e - window : e] for e in ends]), dtype=torch.float32)
    y = run_exported(tmp_path / "ts" / "model.pt", "torchscript", windows)
    last = prices[layout["target"]].to_numpy()[[e - 1 for e in ends]]
    forecast = last[:, None] + y * layout["change_scale"][0]  # the JSON's to_price for diff
    assert layout["to_price"] == "price = last + y * change_scale[k]"
    np.testing.assert_allclose(forecast[:, 0], predictions["predicted"], rtol=1e-5)
    np.testing.assert_allclose(forecast[:, 1], predictions["predicted_t+2"], rtol=1e-5)
