"""TorchScript for the fused recurrences (peephole LSTM, GRU), with the same functions run eagerly as fallback."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


def script_or_eager(*functions: Callable, name: str) -> tuple[Callable, ...]:
    """`torch.jit.script` of each function: the per-step loops then run without Python overhead. TorchScript is
    deprecated from torch 2.10 and may go: on any scripting failure, warn and return the functions unchanged."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return tuple(torch.jit.script(function) for function in functions)
    except Exception as err:  # noqa: BLE001 - any scripting failure: the same code runs eagerly, just slower
        warnings.warn(f"TorchScript unavailable for the {name} ({type(err).__name__}); using eager loops.",
                      stacklevel=2)
        return functions


def exporting() -> bool:
    """True while torch.jit traces or scripts, torch.export / torch.onnx export, or torch.compile traces: the fused
    recurrences' custom autograd functions do not export, so their plain-operation paths run instead."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()
            or torch.compiler.is_exporting())
