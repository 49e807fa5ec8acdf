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
