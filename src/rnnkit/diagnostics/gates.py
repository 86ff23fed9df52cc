"""Gate behaviour over time: the GRU's reset/update gates, the LSTM's input/forget/output.

Gates are recomputed from a step-by-step run (``unroll``): at step t, from the layer's
input projection gx_t and the state before the step, by the cell's own ``Cell.gates``
(the function its step is built on, so the equations live only in ``rnnkit.nn.cells``).
A gate value is *saturated* when it lies below ``LOW = 0.1`` or above ``HIGH = 0.9``:
there the sigmoid's slope s(1 - s) is below 0.09, about a third of its 0.25 peak, so the
gate passes little gradient to its pre-activation and acts as a nearly fixed switch
(closed or open). The thresholds are a convention, not a law; pass others to
``saturated_fraction``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.diagnostics.unroll import unroll
from rnnkit.nn.cells import CELLS, Cell, State
from rnnkit.nn.layers import RNNBase

LOW, HIGH = 0.1, 0.9
GATE_NAMES: dict[str, tuple[str, ...]] = {
    c.name: c.gate_names for c in CELLS.values() if c.gate_names
}
"""The sigmoid gates of each gated cell, from the cell records."""


def gate_names(cell: Cell) -> tuple[str, ...]:
    if not cell.gate_names:
        raise ValueError(
            f"cell {cell.name!r} has no gates; gate statistics exist for {sorted(GATE_NAMES)}"
        )
    return cell.gate_names


def gate_values(
    cell: Cell,
    gx: Tensor,
    state: State,
    w_hh: Tensor | None,
    b_hh: Tensor | None,
    *extra: Tensor | None,
) -> dict[str, Tensor]:
    """The sigmoid gates of one step: gx [B, G] and the state before it -> {name: [B, H]};
    ``extra`` the record's further parameters (``Cell.direction_weights``), as the step's."""
    names = gate_names(cell)
    activations = cell.gates(gx, state, w_hh, b_hh, *extra)
    return {n: activations[n] for n in names}


@dataclass
class GateTrace:
    """Gate values of one layer-direction over a batch: ``gates[name]`` [T, B, H]
    and the hidden states ``hidden`` [T, B, H], in time order."""

    gates: dict[str, Tensor]
    hidden: Tensor

    def quantiles(self, name: str, qs: tuple[float, ...] = (0.1, 0.5, 0.9)) -> np.ndarray:
        """[len(qs), T]: each quantile over batch and units at every step."""
        v = self.gates[name].flatten(1).double()  # [T, B*H]
        return torch.quantile(v, torch.tensor(qs, dtype=v.dtype), dim=1).numpy()

    def saturated_by_time(self, name: str, low: float = LOW, high: float = HIGH) -> np.ndarray:
        """[T]: the fraction of batch x units saturated at each step."""
        v = self.gates[name]
        return ((v < low) | (v > high)).flatten(1).double().mean(1).numpy()

    def saturated(self, low: float = LOW, high: float = HIGH) -> dict[str, float]:
        """{gate: fraction of all its values (steps x batch x units) saturated}."""
        return {n: saturated_fraction(v, low, high) for n, v in self.gates.items()}


def saturated_fraction(values: Tensor, low: float = LOW, high: float = HIGH) -> float:
    """The fraction of ``values`` below ``low`` or above ``high``."""
    if not 0 <= low < high <= 1:
        raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
    return float(((values < low) | (values > high)).double().mean())


@torch.no_grad()
def gate_trace(
    layer: RNNBase,
    x: Tensor,
    *,
    layer_index: int = 0,
    direction: int = 0,
    hx: Tensor | tuple[Tensor, Tensor] | None = None,
) -> GateTrace:
    """Gate values of layer ``layer_index``, direction ``direction`` of ``layer`` on ``x``.

    x: [T, B, D] ([B, T, D] if batch_first). Works on any rnnkit GRU or LSTM stack.
    """
    names = gate_names(layer.cell)
    if not 0 <= layer_index < layer.num_layers:
        raise ValueError(f"layer_index must be in [0, {layer.num_layers}), got {layer_index}")
    if not 0 <= direction < layer.num_directions:
        raise ValueError(f"direction must be in [0, {layer.num_directions}), got {direction}")
    run = unroll(layer, x, hx)
    w_ih, w_hh, b_ih, b_hh, *extra = layer._direction_weights(layer_index, direction)
    assert w_ih is not None  # (w_hh is None for minGRU and minLSTM)
    gx = F.linear(run.layer_inputs[layer_index], w_ih, b_ih)  # [T, B, G]
    seq = run.states[layer_index][direction]
    T = gx.shape[0]
    per_step: dict[str, list[Tensor]] = {n: [x.new_empty(0)] * T for n in names}
    before = run.initial[layer_index][direction]
    for t in range(T - 1, -1, -1) if direction == 1 else range(T):
        for name, v in gate_values(layer.cell, gx[t], before, w_hh, b_hh, *extra).items():
            per_step[name][t] = v
        before = seq[t]
    gates = {n: torch.stack(v) for n, v in per_step.items()}  # each [T, B, H]
    return GateTrace(gates, torch.stack([s[0] for s in seq]))
