"""The one place that turns a cell name into a module: a layer stack (``recurrent_layer``)
or a single-step cell (``cell_module``). Task configs offer ``CELL_NAMES``; tasks never
branch on a cell name themselves.

    rnn_tanh, rnn_relu   Elman RNN with tanh or ReLU
    gru                  GRU, reset gate after the recurrent product (torch.nn, cuDNN)
    gru_reset_before     GRU, reset gate before it (Cho et al. 2014)
    lstm                 LSTM (torch.nn's gate order)
    mingru, minlstm      minimal GRU and LSTM (Feng et al. 2024): gates from x_t only,
                         trained with a parallel scan
"""

from __future__ import annotations

from typing import Any

from rnnkit.nn.cell_modules import CellBase, GRUCell, LSTMCell, MinGRUCell, MinLSTMCell, RNNCell
from rnnkit.nn.cells import CELLS
from rnnkit.nn.layers import GRU, LSTM, RNN, MinGRU, MinLSTM, RNNBase

CELL_NAMES = tuple(CELLS)


def _check_name(cell: str) -> None:
    if cell not in CELL_NAMES:
        raise ValueError(f"cell must be one of {', '.join(CELL_NAMES)}, got {cell!r}")


def recurrent_layer(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    dropout: float = 0.0,
    batch_first: bool = False,
    unit_forget_bias: bool = False,
    proj_size: int = 0,
) -> RNNBase:
    """The rnnkit layer stack for a cell name in ``CELL_NAMES``. ``unit_forget_bias``
    starts the LSTM's forget gates at bias 1 (Jozefowicz et al. 2015, sec. 3); the other
    cells ignore it (the minLSTM's f is normalised against i). ``proj_size`` (lstm only)
    projects h to that many units (Sak et al. 2014); the layer's ``output_size`` is what
    follows it reads."""
    _check_name(cell)
    if proj_size and cell != "lstm":
        raise ValueError(f"proj_size needs the lstm cell, got cell {cell!r}")
    kwargs: dict[str, Any] = {
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "dropout": dropout if num_layers > 1 else 0.0,  # torch.nn warns about it otherwise
        "batch_first": batch_first,
    }
    if cell == "lstm":
        return LSTM(
            input_size,
            hidden_size,
            proj_size=proj_size,
            unit_forget_bias=unit_forget_bias,
            **kwargs,
        )
    if cell.startswith("gru"):
        return GRU(input_size, hidden_size, reset_after=cell == "gru", **kwargs)
    if cell == "mingru":
        return MinGRU(input_size, hidden_size, **kwargs)
    if cell == "minlstm":
        return MinLSTM(input_size, hidden_size, **kwargs)
    return RNN(input_size, hidden_size, nonlinearity=cell.removeprefix("rnn_"), **kwargs)


def cell_module(
    cell: str,
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    unit_forget_bias: bool = False,
) -> CellBase:
    """The rnnkit single-step cell module for a cell name in ``CELL_NAMES``, for a
    hand-written time loop (a decoder that feeds back its own output). Its state is a
    tensor [B, H], or a tuple (h, c) when ``CELLS[cell].num_states == 2``."""
    _check_name(cell)
    if cell == "lstm":
        return LSTMCell(input_size, hidden_size, bias, unit_forget_bias=unit_forget_bias)
    if cell.startswith("gru"):
        return GRUCell(input_size, hidden_size, bias, reset_after=cell == "gru")
    if cell == "mingru":
        return MinGRUCell(input_size, hidden_size, bias)
    if cell == "minlstm":
        return MinLSTMCell(input_size, hidden_size, bias)
    return RNNCell(input_size, hidden_size, bias, nonlinearity=cell.removeprefix("rnn_"))
