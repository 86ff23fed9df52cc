"""The drop-in library: cells, the NumPy reference, the composite runner, the fused
kernels and the layers with ``torch.nn``'s contract.

import rnnkit.nn as rnn
gru = rnn.GRU(32, 64, num_layers=2, reset_after=False)   # torch.nn.GRU's arguments
layer = rnn.recurrent_layer("lstm", 32, 64)               # any cell by name
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rnnkit.nn.cell_modules import GRUCell, LSTMCell, RNNCell
    from rnnkit.nn.cells import CELLS
    from rnnkit.nn.factory import CELL_NAMES, recurrent_layer
    from rnnkit.nn.kernels import get_backend, set_backend, use_backend
    from rnnkit.nn.layers import GRU, LSTM, RNN, RNNBase

# Loaded on first use, so that ``import rnnkit.nn.reference`` (NumPy only) loads no torch.
_WHERE = {
    "GRUCell": "cell_modules",
    "LSTMCell": "cell_modules",
    "RNNCell": "cell_modules",
    "CELLS": "cells",
    "CELL_NAMES": "factory",
    "recurrent_layer": "factory",
    "get_backend": "kernels",
    "set_backend": "kernels",
    "use_backend": "kernels",
    "GRU": "layers",
    "LSTM": "layers",
    "RNN": "layers",
    "RNNBase": "layers",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"rnnkit.nn.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'rnnkit.nn' has no attribute {name!r}")


__all__ = [
    "CELLS",
    "CELL_NAMES",
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "RNNBase",
    "RNNCell",
    "get_backend",
    "recurrent_layer",
    "set_backend",
    "use_backend",
]
