"""Every unit's activation at every step, layer by layer: the states (h, and c for the
LSTM) and the named activations ``Cell.gates`` gives (GRU r, z, n; LSTM i, f, g, o; ...).

The values come from the composite path: ``unroll`` replays the stack one step at a time
through ``Cell.step`` (its output equals the layer's, tested), and each step's
activations are recomputed from its input projection gx_t and the state before it by the
cell's own ``Cell.gates``, the function its step is built on (as ``gates.gate_trace``
does for one layer). The fused kernels keep no gate values, so this is the only path.

Quantisation (what a viewer stores): unit u's values v[t] over the T steps are kept as
uint8 codes over that unit's own range,

    lo_u = min_t v[t],   scale_u = (max_t v[t] - lo_u) / 255,
    q[u, t] = round((v[t] - lo_u) / scale_u)        (0 where the unit is constant),
    v'[t] = lo_u + q[u, t] * scale_u,               |v' - v| <= scale_u / 2.

Shapes: T steps of one sequence, H a signal's units (H for gates and c, R for h).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.diagnostics.unroll import unroll
from rnnkit.nn.layers import RNNBase

LEVELS = 255
"""The largest uint8 code: each unit's range is cut into this many steps."""


@dataclass
class Quantised:
    """One signal's values as uint8 codes: q [H, T] (unit-major: a unit's steps are
    contiguous), lo [H] and scale [H] in float64, v' = lo + q * scale."""

    q: np.ndarray
    lo: np.ndarray
    scale: np.ndarray

    def values(self) -> np.ndarray:
        """The dequantised values v' [T, H], float64."""
        return (self.lo[:, None] + self.q.astype(np.float64) * self.scale[:, None]).T


def quantise(values: np.ndarray) -> Quantised:
    """values [T, H] -> uint8 codes per unit over the unit's own [min, max]."""
    v = np.asarray(values, dtype=np.float64).T  # [H, T]
    if v.ndim != 2 or v.shape[1] == 0:
        raise ValueError(f"quantise needs values [T, H] with T >= 1, got shape {v.shape[::-1]}")
    if not np.isfinite(v).all():
        raise ValueError("cannot quantise non-finite activations (the model diverged?)")
    lo, hi = v.min(axis=1), v.max(axis=1)
    scale = (hi - lo) / LEVELS
    safe = np.where(scale > 0, scale, 1.0)
    q = np.rint((v - lo[:, None]) / safe[:, None]).clip(0, LEVELS).astype(np.uint8)
    return Quantised(q, lo, scale)


@dataclass
class UnitSignals:
    """One layer's signals over a sequence: ``values[name]`` [T, size] float32, in the
    order h, c (with two states), then the cell's ``Cell.gates`` in weight order;
    ``gates``: which names are sigmoid gates (``Cell.gate_names``: values in (0, 1))."""

    values: dict[str, np.ndarray]
    gates: tuple[str, ...]


@torch.no_grad()
def unit_signals(layer: RNNBase, x: Tensor, direction: int = 0) -> list[UnitSignals]:
    """The signals of every layer of ``layer`` for one sequence x [T, 1, D] ([1, T, D]
    if batch_first), direction ``direction``; starting from zero states."""
    if not 0 <= direction < layer.num_directions:
        raise ValueError(f"direction must be in [0, {layer.num_directions}), got {direction}")
    run = unroll(layer, x)
    if run.output.shape[1] != 1:
        raise ValueError(f"unit_signals reads one sequence (B = 1), got B = {run.output.shape[1]}")
    cell = layer.cell
    out: list[UnitSignals] = []
    for l in range(layer.num_layers):
        seq = run.states[l][direction]
        T = len(seq)
        values = {"h": torch.stack([s[0] for s in seq])[:, 0]}  # [T, R]
        if len(seq[0]) > 1:
            values["c"] = torch.stack([s[1] for s in seq])[:, 0]  # [T, H]
        if cell.gate_fn is not None:
            w_ih, w_hh, b_ih, b_hh, *extra = layer._direction_weights(l, direction)
            assert w_ih is not None
            gx = F.linear(run.layer_inputs[l], w_ih, b_ih)  # [T, 1, G]
            per_step: list[dict[str, Tensor]] = [{}] * T
            before = run.initial[l][direction]
            for t in range(T - 1, -1, -1) if direction == 1 else range(T):
                per_step[t] = cell.gates(gx[t], before, w_hh, b_hh, *extra)
                before = seq[t]
            for name in per_step[0]:
                values[name] = torch.stack([step[name] for step in per_step])[:, 0]  # [T, H]
        arrays = {n: v.float().cpu().numpy() for n, v in values.items()}
        out.append(UnitSignals(arrays, tuple(cell.gate_names)))
    return out
