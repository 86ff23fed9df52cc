"""The NumPy reference: forward over a whole sequence and hand-written BPTT, per cell.

This is the textbook and the oracle every other implementation is tested against.
``forward(x, state0, params, **options) -> (ys, final_state, cache)`` and
``backward(cache, dys, dfinal_state) -> Grads`` for one layer and one direction.
``for_cell(cell)`` returns the pair for a ``rnnkit.nn.cells.Cell`` with its options bound.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Protocol

from rnnkit.nn.reference import gru, lstm, minimal, rnn
from rnnkit.nn.reference._common import Grads, Params

_MODULES: dict[str, ModuleType] = {
    "rnn_tanh": rnn,
    "rnn_relu": rnn,
    "gru": gru,
    "gru_reset_before": gru,
    "lstm": lstm,
    "mingru": minimal,
    "minlstm": minimal,
}


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


__all__ = ["Grads", "Params", "for_cell", "gru", "lstm", "minimal", "rnn"]
