"""The recurrent encoder shared by the task models: any rnnkit cell, deep, one or two
directions, batch-first, variable lengths."""

from __future__ import annotations

from typing import Any

from rnnkit.nn.cells import CELLS
from rnnkit.nn.layers import GRU, LSTM, RNN, RNNBase

CELL_NAMES = tuple(CELLS)


def recurrent_layer(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    dropout: float = 0.0,
    batch_first: bool = False,
) -> RNNBase:
    """The rnnkit layer for a cell name from ``rnnkit.nn.cells.CELLS``."""
    kwargs: dict[str, Any] = {
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "dropout": dropout if num_layers > 1 else 0.0,  # torch.nn warns about it otherwise
        "batch_first": batch_first,
    }
    if cell in ("rnn_tanh", "rnn_relu"):
        return RNN(input_size, hidden_size, nonlinearity=cell.removeprefix("rnn_"), **kwargs)
    if cell in ("gru", "gru_reset_before"):
        return GRU(input_size, hidden_size, reset_after=cell == "gru", **kwargs)
    if cell == "lstm":
        return LSTM(input_size, hidden_size, **kwargs)
    raise ValueError(f"cell must be one of {CELL_NAMES}, got {cell!r}")
