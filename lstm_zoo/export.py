"""Export a trained forecaster to ONNX or TorchScript, with a JSON that maps its outputs back to prices.

The exported model maps scaled windows (batch, window, features), float32, to the model's forecasts in its own
units: (batch, horizon), or (batch, horizon, quantiles) ordered along the last axis for a quantile head. The batch
size is dynamic. `<name>.json` beside it holds the scaler, the target transform and the layout.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.core.module import _jit_is_scripting
from omegaconf import DictConfig
from torch import Tensor, nn

from lstm_zoo.build import route_lightning_logs_to_hydra
from lstm_zoo.checkpoints import load_forecaster
from lstm_zoo.errors import ConfigError
from lstm_zoo.models import Forecaster

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
TO_PRICE = {  # y: the exported model's output, last: the window's last target price, k: its ticker's row
    "level": "price = y * (data_max[k][target_index] - data_min[k][target_index]) + data_min[k][target_index]",
    "diff": "price = last + y * change_scale[k]",
    "log_return": "price = last * exp(y * change_scale[k])",
}


class ServedForecaster(nn.Module):
    """What the exported file runs: `Forecaster.forecast` (the point forecast, or the ordered quantiles)."""

    def __init__(self, model: Forecaster) -> None:
        super().__init__()
        self.model = model

    def forward(self, windows: Tensor) -> Tensor:
        return self.model.forecast(windows)


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise ConfigError(f"format={name!r} is not an export format. Fix: format=onnx or format=torchscript.")
    return name


def layout(model: Forecaster, data_state: dict, fmt: str) -> dict:
    """The JSON beside the model file: inputs, outputs, and each ticker's scaling and the transform that give prices."""
    columns, features = data_state["columns"], data_state["features"]
    horizon, quantiles = model.hparams.horizon, model.quantiles
    tickers, lows, highs, changes = (data_state.get("tickers"), data_state["data_min"], data_state["data_max"],
                                     data_state.get("change_scale"))
    if tickers is None:  # a checkpoint written before several tickers: one series, flat lists
        tickers, lows, highs, changes = ["series"], [lows], [highs], [changes]
    transform = data_state.get("target_transform", "level")
    return {
        "format": fmt, "model_file": FORMATS[fmt], "model_class": f"{type(model).__module__}.{type(model).__name__}",
        "input": {"name": "windows", "shape": ["batch", model.hparams.window, len(features)], "dtype": "float32",
                  "features": features, "scaling": "x = (value - data_min[k][j]) / (data_max[k][j] - data_min[k][j]) "
                                                   "for feature j (its index in scaler.columns) of ticker k"},
        "output": {"name": "forecast", "dtype": "float32",
                   "shape": ["batch", horizon] + ([len(quantiles)] if quantiles else []),
                   "quantiles": list(quantiles) if quantiles else None,
                   "median_index": model.median_index if quantiles else None},
        "scaler": {"tickers": tickers, "columns": columns, "data_min": lows, "data_max": highs},
        "target": data_state["target"], "target_index": columns.index(data_state["target"]),
        "target_transform": transform, "change_scale": None if transform == "level" else changes,
        "to_price": TO_PRICE[transform], "torch": torch.__version__,
    }


def export_onnx(served: ServedForecaster, example: Tensor, path: Path) -> None:
    """torch.onnx.export with torch 2.13's default, the dynamo (torch.export) exporter, and a dynamic batch.

    The graph is captured by torch.export.export (non-strict, the exporter's first capture strategy) and handed to
    the exporter as an ExportedProgram, so every export of a process takes the same path. Left to capture it itself
    with a dynamic dimension, the exporter swaps nn.LSTM/GRU for a while_loop (for dynamic sequence lengths; a window
    is fixed) that torch.compile traces, or not, depending on what the process exported before (export.py's one
    export does, exporting the same model again does not). The ONNX graph is the same (nn.LSTM becomes one ONNX LSTM
    node either way), and a small model's export in a fresh process takes a third less time."""
    try:  # the dynamo exporter needs onnxscript, the parity check onnxruntime: a clear error beats torch's
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("format=onnx needs the `export` extra (onnx, onnxruntime, onnxscript). Fix: "
                          "pip install -e '.[export]'") from None
    # their INFO lines (one per optimisation pass) would flood the console and the log; the exporter's registry
    # warns once per torchvision operator that torchvision is not installed, which an lstm_zoo model never uses
    quiet = {"onnx_ir": logging.WARNING, "onnxscript": logging.WARNING, "torch.onnx": logging.WARNING,
             "torch.onnx._internal.exporter._registration": logging.ERROR}
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # it prints its progress
            # nn.LSTM re-assigns its flat weight list in forward; torch.export warns, and the export is still exact
            warnings.filterwarnings("ignore", message=".*were assigned during export.*")
            captured = torch.export.export(served, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                                           strict=False)
            program = torch.onnx.export(captured, (example,), dynamo=True, input_names=["windows"],
                                        output_names=["forecast"], verbose=False, dynamic_shapes=({0: "batch"},))
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    program.save(str(path))


def export_torchscript(served: ServedForecaster, example: Tensor, path: Path) -> None:
    """torch.jit.trace: the fused cells run their plain-operation paths while traced, so any batch size works."""
    # the tracer reads every attribute, and a LightningModule's `trainer` raises outside a Trainer unless this
    # flag is set (what LightningModule.to_torchscript does; it traces `forward`, not `forecast`)
    with _jit_is_scripting(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice and tracer notes on constant shapes
        torch.jit.save(torch.jit.trace(served, (example,)), str(path))


def run_exported(path: Path, fmt: str, windows: Tensor) -> np.ndarray:
    """The exported file's forecasts of `windows`: onnxruntime for ONNX, torch.jit.load for TorchScript."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"windows": windows.numpy()})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path)).eval()(windows).detach().numpy()


def export_forecaster(model: Forecaster, data_state: dict, fmt: str, out: Path,
                      check_windows: Tensor | None = None) -> dict:
    """Write the model file and its JSON into `out`; returns the JSON, with the largest difference from PyTorch on
    `check_windows` (random windows in [0, 1] by default) in `parity_max_abs_diff`."""
    check_format(fmt)
    model = model.cpu().eval()
    served = ServedForecaster(model).eval()
    window, n_features = model.hparams.window, model.hparams.n_features
    example = torch.rand(2, window, n_features)  # batch 2: torch.export specializes sizes 0 and 1
    path = out / FORMATS[fmt]
    with torch.no_grad():
        (export_onnx if fmt == "onnx" else export_torchscript)(served, example, path)
        windows = check_windows if check_windows is not None else torch.rand(5, window, n_features)
        expected = served(windows).numpy()
    info = layout(model, data_state, fmt)
    info["parity_max_abs_diff"] = float(np.abs(run_exported(path, fmt, windows) - expected).max())
    info["parity_windows"] = len(windows)
    (out / FORMATS[fmt]).with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def export(cfg: DictConfig) -> dict:
    """Export a checkpoint's model to ONNX or TorchScript (`cfg.format`) with its scaling JSON, checked against
    PyTorch on random windows."""
    route_lightning_logs_to_hydra()
    check_format(cfg.format)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, data_state = load_forecaster(cfg.ckpt_path)
    info = export_forecaster(model, data_state, cfg.format, out)
    difference, shapes = info["parity_max_abs_diff"], f"{info['input']['shape']} -> {info['output']['shape']}"
    if not difference <= 1e-4:
        raise RuntimeError(f"the exported {cfg.format} model differs from PyTorch by {difference:.3g} on "
                           f"{info['parity_windows']} random windows: the export is wrong (please report it).")
    print(f"Exported {info['model_class']} to {out / info['model_file']} ({cfg.format}, {shapes}), its scaling and "
          f"layout to {out / Path(info['model_file']).stem}.json; largest difference from PyTorch on "
          f"{info['parity_windows']} random windows: {difference:.2g}.")
    return info
