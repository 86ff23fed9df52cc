"""Cell kinds: one module per cell, each a ``Cell`` record plus its composite step."""

from rnnkit.nn.cells.base import Cell, ParamSpec, State
from rnnkit.nn.cells.gru import GRU, GRU_RESET_BEFORE, gru_cell
from rnnkit.nn.cells.layer_norm import GRU_LN, LSTM_LN, LayerNormCell
from rnnkit.nn.cells.lstm import LSTM, lstm_cell, set_forget_bias
from rnnkit.nn.cells.minimal import MINGRU, MINLSTM
from rnnkit.nn.cells.rnn import RNN_RELU, RNN_TANH, rnn_cell

CELLS: dict[str, Cell] = {
    c.name: c for c in (RNN_TANH, RNN_RELU, GRU, GRU_RESET_BEFORE, LSTM, LSTM_LN, GRU_LN)
}
CELLS |= {c.name: c for c in (MINGRU, MINLSTM)}  # parallel-scan cells (cells/minimal.py)

__all__ = [
    "CELLS",
    "GRU",
    "GRU_LN",
    "GRU_RESET_BEFORE",
    "LSTM",
    "LSTM_LN",
    "MINGRU",
    "MINLSTM",
    "RNN_RELU",
    "RNN_TANH",
    "Cell",
    "LayerNormCell",
    "ParamSpec",
    "State",
    "gru_cell",
    "lstm_cell",
    "rnn_cell",
    "set_forget_bias",
]
