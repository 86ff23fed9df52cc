"""NumPy reference for the layer-normalised GRU over a whole sequence, with hand-written
BPTT (``rnnkit.nn.cells.layer_norm``; Ba et al. 2016; haste's LayerNormGRU, reset-after).

Forward (gate order r, z, n), with LN as in ``reference.layer_norm``:
    px = LN(W x; g_ih, b_ih),  ph = LN(U h; g_hh, b_hh)        each [B, 3H]
    r = sigmoid(px_r + ph_r),  z = sigmoid(px_z + ph_z)
    n = tanh(px_n + r ph_n),   h' = (1 - z) n + z h

Backward of one step, given dh' = dL/dh':
    dn = dh' (1 - z),  dz = dh' (h - n),  dh = dh' z           (direct path)
    dan = dn (1 - n^2),  dar = dan ph_n r (1 - r),  daz = dz z (1 - z)
    dpx = [dar, daz, dan],  dph = [dar, daz, dan r]
    d(W x) = LN_backward(dpx; g_ih),  d(U h) = LN_backward(dph; g_hh)
    db_ih = sum dpx,  db_hh = sum dph,  dg_ih = sum dpx x^_x,  dg_hh = sum dph x^_h
    dh += U^T d(U h)
"""

from __future__ import annotations

import numpy as np

from rnnkit.nn.reference._common import Array, sigmoid
from rnnkit.nn.reference.layer_norm import (
    EPS,
    LayerNormGrads,
    LayerNormParams,
    input_grads,
    norm_backward,
    norm_forward,
)

Params = LayerNormParams  # what ``reference.params`` builds for this cell


def forward(x: Array, state0: tuple[Array, ...], p: LayerNormParams, eps: float = EPS):
    """x [T, B, D], state0 = (h0 [B, H],) -> (ys [T, B, H], (h_T,), cache)."""
    (h,) = state0
    H = h.shape[1]
    ax = x @ p.w_ih.T  # [T, B, D] @ [D, 3H]: every step's W x
    assert p.w_hh is not None  # a recurrent cell
    ys, saved = [], []
    for ax_t in ax:
        px, nx = norm_forward(ax_t, p.ln_ih_weight, p.b_ih, eps)  # [B, 3H]
        ph, nh = norm_forward(h @ p.w_hh.T, p.ln_hh_weight, p.b_hh, eps)  # [B, H] @ [H, 3H]
        r = sigmoid(px[:, :H] + ph[:, :H])
        z = sigmoid(px[:, H : 2 * H] + ph[:, H : 2 * H])
        n = np.tanh(px[:, 2 * H :] + r * ph[:, 2 * H :])
        saved.append((h, r, z, n, ph[:, 2 * H :], nx, nh))
        h = (1.0 - z) * n + z * h
        ys.append(h)
    return np.stack(ys), (h,), (x, p, saved)


def backward(cache, dys: Array, dstate_T: tuple[Array, ...]) -> LayerNormGrads:
    """dys [T, B, H] = dL/dys and dstate_T = (dL/dh_T,) -> gradients of everything."""
    x, p, saved = cache
    (dh,) = dstate_T
    T, G = len(x), p.w_hh.shape[0]
    dax = np.zeros((T, dh.shape[0], G), x.dtype)  # dL/d(W x_t)      [T, B, 3H]
    dah = np.zeros_like(dax)  # dL/d(U h_{t-1})                      [T, B, 3H]
    dg_ih, dg_hh, db_ih, db_hh = (np.zeros(G, x.dtype) for _ in range(4))
    for t in reversed(range(T)):
        h, r, z, n, ph_n, nx, nh = saved[t]
        dh = dh + dys[t]
        dn = dh * (1.0 - z)
        dz = dh * (h - n)
        dan = dn * (1.0 - n**2)
        dar = dan * ph_n * r * (1.0 - r)
        daz = dz * z * (1.0 - z)
        dpx = np.concatenate([dar, daz, dan], axis=1)  # [B, 3H]
        dph = np.concatenate([dar, daz, dan * r], axis=1)
        dax[t], dg, db = norm_backward(dpx, p.ln_ih_weight, nx)
        dg_ih += dg
        db_ih += db
        dah[t], dg, db = norm_backward(dph, p.ln_hh_weight, nh)
        dg_hh += dg
        db_hh += db
        dh = dh * z + dah[t] @ p.w_hh  # direct path + [B, 3H] @ [3H, H]
    grads = input_grads(p, dax, dah, x, np.stack([s[0] for s in saved]))
    grads.state0 = (dh,)
    grads.b_ih = None if p.b_ih is None else db_ih
    grads.b_hh = None if p.b_hh is None else db_hh
    grads.ln_ih_weight, grads.ln_hh_weight = dg_ih, dg_hh
    return grads
