"""The one place that turns a cell name into a module: a layer stack (``recurrent_layer``)
or a single-step cell (``cell_module``). Task configs offer ``CELL_NAMES``; tasks never
branch on a cell name themselves.

    rnn_tanh, rnn_relu   Elman RNN with tanh or ReLU
    gru                  GRU, reset gate after the recurrent product (torch.nn, cuDNN)
    gru_reset_before     GRU, reset gate before it (Cho et al. 2014)
    lstm                 LSTM (torch.nn's gate order)
    lstm_ln, gru_ln      layer-normalised LSTM and GRU (reset-after) (Ba et al. 2016; haste)
    mingru, minlstm      minimal GRU and LSTM (Feng et al. 2024): gates from x_t only,
                         trained with a parallel scan
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rnnkit.common.variants import VARIANT_FIELDS
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
    variants: Mapping[str, Any] | None = None,
) -> RNNBase:
    """The rnnkit layer stack for a cell name in ``CELL_NAMES``. ``unit_forget_bias``
    starts the LSTM's forget gates at bias 1 (Jozefowicz et al. 2015, sec. 3); the other
    cells ignore it (the minLSTM's f is normalised against i). ``proj_size`` (lstm only)
    projects h to that many units (Sak et al. 2014); the layer's ``output_size`` is what
    follows it reads. ``variants``: a task config's ``rnnkit.common.variants.CellVariants``
    fields by name (``variant_fields``); with ``locked_dropout`` the layer drops its input,
    between its layers and its output with ``dropout``, one mask per sequence, and the
    caller leaves its own dropout off those sequences (``drops_sequences``)."""
    _check_name(cell)
    v = dict(variants or {})
    proj_size = v.pop("proj_size", 0) or proj_size
    if proj_size and cell != "lstm":
        raise ValueError(f"proj_size needs the lstm cell, got cell {cell!r}")
    kwargs: dict[str, Any] = {
        "num_layers": num_layers,
        "bidirectional": bidirectional,
        "dropout": dropout if num_layers > 1 else 0.0,  # torch.nn warns about it otherwise
        "batch_first": batch_first,
    }
    if v.pop("locked_dropout", False) and dropout:
        kwargs["dropout"] = 0.0
        kwargs["variational_dropout"] = dropout
    kwargs |= _regularisers(v)
    if cell in ("lstm", "lstm_ln"):
        return LSTM(
            input_size,
            hidden_size,
            proj_size=proj_size,
            unit_forget_bias=unit_forget_bias,
            layer_norm=cell == "lstm_ln",
            **kwargs,
        )
    if cell.startswith("gru"):
        reset_after, layer_norm = cell != "gru_reset_before", cell == "gru_ln"
        return GRU(
            input_size, hidden_size, reset_after=reset_after, layer_norm=layer_norm, **kwargs
        )
    if cell == "mingru":
        return MinGRU(input_size, hidden_size, **kwargs)
    if cell == "minlstm":
        return MinLSTM(input_size, hidden_size, **kwargs)
    return RNN(input_size, hidden_size, nonlinearity=cell.removeprefix("rnn_"), **kwargs)


def variant_fields(config: Any) -> dict[str, Any]:
    """A task config's ``CellVariants`` fields by name, for ``recurrent_layer(variants=)``."""
    return {name: getattr(config, name) for name in VARIANT_FIELDS}


def drops_sequences(config: Any) -> bool:
    """Whether a task model applies its own dropout to the sequences into and out of its
    recurrent stack: not when the stack does it per sequence (``locked_dropout``)."""
    return not getattr(config, "locked_dropout", False)


def _regularisers(v: dict[str, Any]) -> dict[str, Any]:
    """The per-step regularisers' arguments from the variant fields left in ``v``
    (``recurrent_dropout``, ``weight_drop``, ``zoneout`` with ``zoneout_cell``): the
    ones that are set, zoneout as (p_h, p_c) where c has its own rate."""
    kwargs: dict[str, Any] = {}
    zoneout, zoneout_cell = v.pop("zoneout", 0.0), v.pop("zoneout_cell", None)
    if zoneout_cell is not None and zoneout_cell != zoneout:
        kwargs["zoneout"] = (zoneout, zoneout_cell)
    elif zoneout:
        kwargs["zoneout"] = zoneout
    return kwargs | {name: value for name, value in v.items() if value}  # the layer checks them


def cell_module(
    cell: str,
    input_size: int,
    hidden_size: int,
    *,
    bias: bool = True,
    unit_forget_bias: bool = False,
    variants: Mapping[str, Any] | None = None,
) -> CellBase:
    """The rnnkit single-step cell module for a cell name in ``CELL_NAMES``, for a
    hand-written time loop (a decoder that feeds back its own output). Its state is a
    tensor [B, H], or a tuple (h, c) when ``CELLS[cell].num_states == 2``. ``variants``:
    a task config's fields (``variant_fields``), of which a cell module takes the per-step
    regularisers (``recurrent_dropout``, ``weight_drop``, ``zoneout``, ``zoneout_cell``);
    ``proj_size`` and ``locked_dropout`` concern a layer stack and are not read here."""
    _check_name(cell)
    v = {k: x for k, x in (variants or {}).items() if k not in ("proj_size", "locked_dropout")}
    kwargs = _regularisers(v)
    if cell in ("lstm", "lstm_ln"):
        return LSTMCell(
            input_size,
            hidden_size,
            bias,
            unit_forget_bias=unit_forget_bias,
            layer_norm=cell == "lstm_ln",
            **kwargs,
        )
    if cell.startswith("gru"):
        reset_after, layer_norm = cell != "gru_reset_before", cell == "gru_ln"
        return GRUCell(
            input_size,
            hidden_size,
            bias,
            reset_after=reset_after,
            layer_norm=layer_norm,
            **kwargs,
        )
    if cell == "mingru":
        return MinGRUCell(input_size, hidden_size, bias, **kwargs)
    if cell == "minlstm":
        return MinLSTMCell(input_size, hidden_size, bias, **kwargs)
    return RNNCell(input_size, hidden_size, bias, nonlinearity=cell.removeprefix("rnn_"), **kwargs)
