"""rnnkit: recurrent neural networks (RNN, GRU, LSTM) as the literature writes them.

import rnnkit
gru = rnnkit.GRU(input_size=32, hidden_size=64, num_layers=2, reset_after=False)
output, h_n = gru(x)                  # same contract as torch.nn.GRU
"""

from rnnkit.cell_modules import GRUCell, LSTMCell, RNNCell
from rnnkit.kernels import get_backend, set_backend, use_backend
from rnnkit.layers import GRU, LSTM, RNN, RNNBase

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "RNNBase",
    "RNNCell",
    "get_backend",
    "set_backend",
    "use_backend",
]
