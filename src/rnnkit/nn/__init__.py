"""The drop-in library: cells, the NumPy reference, the composite runner, the fused
kernels and the layers with ``torch.nn``'s contract.

import rnnkit.nn as rnn
gru = rnn.GRU(32, 64, num_layers=2, reset_after=False)   # torch.nn.GRU's arguments
layer = rnn.recurrent_layer("lstm", 32, 64)               # any cell by name
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.nn.cell_modules import GRUCell, LSTMCell, MinGRUCell, MinLSTMCell, RNNCell
    from rnnkit.nn.cells import CELLS
    from rnnkit.nn.factory import CELL_NAMES, cell_module, recurrent_layer
    from rnnkit.nn.kernels import get_backend, set_backend, use_backend
    from rnnkit.nn.layers import GRU, LSTM, RNN, MinGRU, MinLSTM, RNNBase

# Loaded on first use, so that ``import rnnkit.nn.reference`` (NumPy only) loads no torch.
__getattr__ = lazy_exports(
    __name__,
    {
        "GRUCell": "rnnkit.nn.cell_modules",
        "LSTMCell": "rnnkit.nn.cell_modules",
        "RNNCell": "rnnkit.nn.cell_modules",
        "MinGRUCell": "rnnkit.nn.cell_modules",
        "MinLSTMCell": "rnnkit.nn.cell_modules",
        "CELLS": "rnnkit.nn.cells",
        "CELL_NAMES": "rnnkit.nn.factory",
        "recurrent_layer": "rnnkit.nn.factory",
        "cell_module": "rnnkit.nn.factory",
        "get_backend": "rnnkit.nn.kernels",
        "set_backend": "rnnkit.nn.kernels",
        "use_backend": "rnnkit.nn.kernels",
        "GRU": "rnnkit.nn.layers",
        "LSTM": "rnnkit.nn.layers",
        "RNN": "rnnkit.nn.layers",
        "RNNBase": "rnnkit.nn.layers",
        "MinGRU": "rnnkit.nn.layers",
        "MinLSTM": "rnnkit.nn.layers",
    },
)
__all__ = [
    "CELLS",
    "CELL_NAMES",
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "MinGRU",
    "MinGRUCell",
    "MinLSTM",
    "MinLSTMCell",
    "RNNBase",
    "RNNCell",
    "cell_module",
    "get_backend",
    "recurrent_layer",
    "set_backend",
    "use_backend",
]
