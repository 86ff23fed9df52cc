"""The drop-in library: cells, the NumPy reference, the composite runner, the fused
kernels and the layers with ``torch.nn``'s contract.

import rnnkit.nn as rnn
gru = rnn.GRU(32, 64, num_layers=2, reset_after=False)   # torch.nn.GRU's arguments
layer = rnn.recurrent_layer("lstm", 32, 64)               # any cell by name
"""

from rnnkit.nn.cell_modules import GRUCell, LSTMCell, RNNCell
from rnnkit.nn.cells import CELLS
from rnnkit.nn.factory import CELL_NAMES, recurrent_layer
from rnnkit.nn.kernels import get_backend, set_backend, use_backend
from rnnkit.nn.layers import GRU, LSTM, RNN, RNNBase

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
