"""NumPy reference for the Elman RNN over a whole sequence, with hand-written BPTT.

Forward, for t = 0 .. T-1 (see ``rnnkit.nn.cells.rnn``), with the regularisers' masks
(``_common``: m [B, H] recurrent dropout, k_t zoneout; without them m = 1, k_t = 0):
    a_t = W x_t + b_i + U (m * h_{t-1}) + b_h
    n_t = act(a_t)
    h_t = k_t h_{t-1} + (1 - k_t) n_t

Backward, for t = T-1 .. 0, with dh carrying dL/dh_t from the future:
    dh    += dL/dy_t                       (the output at t is h_t)
    da_t   = (1 - k_t) dh * act'(a_t)      tanh' = 1 - n_t^2, relu' = [a_t > 0]
    dh     = m * (U^T da_t) + k_t dh       (into h_{t-1})
and dW = sum_t da_t x_t^T, dU = sum_t da_t (m * h_{t-1})^T, db_i = db_h = sum_t da_t,
dx_t = W^T da_t.
"""

from __future__ import annotations

import numpy as np

from rnnkit.nn.reference._common import (
    Array,
    Grads,
    Params,
    bias_or_zero,
    keep_masks,
    unzone,
    weight_grads,
    zone,
)


def forward(
    x: Array,
    state0: tuple[Array, ...],
    p: Params,
    nonlinearity: str = "tanh",
    *,
    recurrent_mask: Array | None = None,
    zoneout: tuple[Array | None, ...] | None = None,
):
    """x [T, B, D], state0 = (h0 [B, H],) -> (ys [T, B, H], (h_T,), cache);
    ``recurrent_mask`` [B, H], ``zoneout`` (k [T, B, H] or None,) as ``_common``."""
    (h,) = state0
    (k,) = keep_masks(zoneout, 1)
    assert p.w_hh is not None  # a recurrent cell
    G = p.w_hh.shape[0]
    b = bias_or_zero(p.b_ih, G, x.dtype) + bias_or_zero(p.b_hh, G, x.dtype)
    ys, pre, news, h_ins = [], [], [], []
    for t, x_t in enumerate(x):
        h_in = h if recurrent_mask is None else recurrent_mask * h
        a = x_t @ p.w_ih.T + h_in @ p.w_hh.T + b  # [B, D] @ [D, H] + [B, H] @ [H, H]
        n = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)
        h = zone(None if k is None else k[t], h, n)
        pre.append(a)
        news.append(n)
        h_ins.append(h_in)
        ys.append(h)
    saved = (np.stack(pre), np.stack(news), np.stack(h_ins))
    cache = (x, p, nonlinearity, recurrent_mask, k, saved)
    return np.stack(ys), (h,), cache


def backward(cache, dys: Array, dstate_T: tuple[Array, ...]) -> Grads:
    """dys [T, B, H] = dL/dys and dstate_T = (dL/dh_T,) -> gradients of everything."""
    x, p, nonlinearity, m, k, (pre, news, h_in) = cache
    (dh,) = dstate_T
    da = np.zeros_like(pre)  # [T, B, H]
    for t in reversed(range(len(x))):
        dh = dh + dys[t]
        dn, dh_direct = unzone(None if k is None else k[t], dh)
        act_grad = 1.0 - news[t] ** 2 if nonlinearity == "tanh" else (pre[t] > 0).astype(x.dtype)
        da[t] = dn * act_grad
        dh_in = da[t] @ p.w_hh  # [B, H] @ [H, H]
        dh = (dh_in if m is None else m * dh_in) + dh_direct
    g = weight_grads(p, da, da, x, h_in)
    g.state0 = (dh,)
    return g
