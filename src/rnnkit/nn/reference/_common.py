"""Containers and helpers shared by the NumPy reference cells.

The regularisers' masks (``rnnkit.nn.noise``) are ``forward``'s keyword arguments, given
as arrays so the reference stays deterministic:

``recurrent_mask`` m [B, R] (recurrent dropout): the recurrent product reads
h_in = m * h_{t-1}; backward, dL/dh_{t-1} gets m * (U^T da) on that path only, and
dU = sum_t da_t^T h_in,t.

``zoneout`` (k_1, ...) per state, each [T, B, size] or None: after the step,
s_t = k_t s_{t-1} + (1 - k_t) s_new; backward, dL/ds_new = (1 - k_t) dL/ds_t and
dL/ds_{t-1} gets k_t dL/ds_t besides the step's own paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.floating]


@dataclass
class Params:
    """One layer-direction's weights, named and laid out as in ``torch.nn``."""

    w_ih: Array  # [G, D]
    w_hh: Array | None  # [G, R], R = h's size (H, or P with a projection); None: minGRU, minLSTM
    b_ih: Array | None  # [G]
    b_hh: Array | None  # [G]
    w_hr: Array | None = None  # [P, H]: the LSTM's projection (proj_size P), or None


@dataclass
class Grads:
    """Gradients of a scalar loss with respect to every input of ``forward``."""

    x: Array  # [T, B, D]
    state0: tuple[Array, ...]  # each [B, H]
    w_ih: Array
    w_hh: Array | None  # None for a cell without recurrent weights (minGRU, minLSTM)
    b_ih: Array | None
    b_hh: Array | None
    w_hr: Array | None = None


def sigmoid(a: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-a))


def bias_or_zero(b: Array | None, rows: int, dtype: np.dtype) -> Array:
    return np.zeros(rows, dtype) if b is None else b


def weight_grads(p: Params, dgx: Array, dgh: Array, x: Array, h_prev: Array) -> Grads:
    """The weight and input gradients once per-step gate gradients are known.

    dgx [T, B, G] is dL/d(W_ih x_t + b_ih); dgh [T, B, G] is dL/d(W_hh h_{t-1} + b_hh);
    h_prev [T, B, H] holds h_{t-1}. The sums over t and B are single contractions.
    """
    return Grads(
        x=dgx @ p.w_ih,  # [T, B, G] @ [G, D] -> [T, B, D]
        state0=(),
        w_ih=np.einsum("tbg,tbd->gd", dgx, x),
        w_hh=np.einsum("tbg,tbh->gh", dgh, h_prev),
        b_ih=None if p.b_ih is None else dgx.sum(axis=(0, 1)),
        b_hh=None if p.b_hh is None else dgh.sum(axis=(0, 1)),
    )


def keep_masks(zoneout: tuple[Array | None, ...] | None, num_states: int) -> tuple:
    """Zoneout's keep-masks per state (None where a state has none)."""
    return (None,) * num_states if zoneout is None else tuple(zoneout)


def zone(k: Array | None, old: Array, new: Array) -> Array:
    """s_t = k s_{t-1} + (1 - k) s_new (zoneout; k None: s_new)."""
    return new if k is None else k * old + (1.0 - k) * new


def unzone(k: Array | None, ds: Array) -> tuple[Array, Array | float]:
    """dL/ds_t -> (dL/ds_new, the direct part of dL/ds_{t-1}): ((1 - k) ds, k ds)."""
    return (ds, 0.0) if k is None else ((1.0 - k) * ds, k * ds)
