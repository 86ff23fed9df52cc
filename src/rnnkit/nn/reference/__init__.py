"""The NumPy reference: forward over a whole sequence and hand-written BPTT, per cell.

This is the textbook and the oracle every other implementation is tested against.
``forward(x, state0, params, **options) -> (ys, final_state, cache)`` and
``backward(cache, dys, dfinal_state) -> Grads`` for one layer and one direction; the
regularisers' masks as keyword arrays, ``forward(..., recurrent_mask=m, zoneout=(k, ...))``
(recurrent dropout and zoneout, ``_common``; their BPTT by hand too).
``for_cell(cell)`` returns the pair for a ``rnnkit.nn.cells.Cell`` with its options bound;
``params(cell, named)`` builds its parameter container from torch.nn's parameter names and
``named_grads`` reads a ``Grads`` back by those names, for callers generic over cells.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Protocol

from rnnkit.nn.reference import gru, gru_ln, lstm, lstm_ln, minimal, rnn
from rnnkit.nn.reference._common import Array, Grads, Params

_MODULES: dict[str, ModuleType] = {
    "rnn_tanh": rnn,
    "rnn_relu": rnn,
    "gru": gru,
    "gru_reset_before": gru,
    "lstm": lstm,
    "lstm_ln": lstm_ln,
    "gru_ln": gru_ln,
    "mingru": minimal,
    "minlstm": minimal,
}
_FIELDS = {
    "weight_ih": "w_ih",
    "weight_hh": "w_hh",
    "bias_ih": "b_ih",
    "bias_hh": "b_hh",
    "weight_hr": "w_hr",
}
"""torch.nn's parameter names (without the layer suffix) -> the reference's field names;
other parameters (a layer norm's ``ln_ih_weight``, ...) keep their names."""


class CellRecord(Protocol):
    """What the reference needs of a ``rnnkit.nn.cells.Cell`` (named here, not imported:
    the reference imports NumPy only)."""

    @property
    def name(self) -> str: ...
    @property
    def options(self) -> Any: ...


def for_cell(cell: CellRecord):
    """(forward, backward) of the reference for ``cell``, its form options bound."""
    module = _MODULES[cell.name]
    return functools.partial(module.forward, **dict(cell.options)), module.backward


def params(cell: CellRecord, named: Mapping[str, Array]) -> Params:
    """A layer-direction's parameters by torch.nn name (``Cell.parameters``' names; an
    absent bias or recurrent weight is None) -> the container ``cell``'s reference takes
    (``module.Params``)."""
    fields: dict[str, Array | None] = {"w_hh": None, "b_ih": None, "b_hh": None}
    fields |= {_FIELDS.get(kind, kind): value for kind, value in named.items()}
    return _MODULES[cell.name].Params(**fields)


def named_grads(grads: Grads) -> dict[str, Array]:
    """The parameter gradients of ``grads`` by torch.nn name (absent parameters left out)."""
    kinds = {name: kind for kind, name in _FIELDS.items()}
    return {
        kinds.get(f.name, f.name): getattr(grads, f.name)
        for f in dataclasses.fields(grads)
        if f.name not in ("x", "state0") and getattr(grads, f.name) is not None
    }


__all__ = [
    "Grads",
    "Params",
    "for_cell",
    "gru",
    "gru_ln",
    "lstm",
    "lstm_ln",
    "minimal",
    "named_grads",
    "params",
    "rnn",
]
