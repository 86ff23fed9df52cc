"""NumPy reference for the LSTM over a whole sequence, with hand-written BPTT.

Forward (``rnnkit.nn.cells.lstm``, gate order i, f, g, o), with a = W x + b_i + U h + b_h:
    i, f, o = sigmoid(a_i, a_f, a_o),  g = tanh(a_g)
    c' = f c + i g,  h' = o tanh(c')

Backward of one step, given dh' and dc' (the carried cell gradient):
    do = dh' tanh(c'),  dc = dc' + dh' o (1 - tanh(c')^2)
    di = dc g,  df = dc c,  dg = dc i,  dc_prev = dc f
    da = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]
    dh_prev = U^T da

With a projection W_hr [P, H] (proj_size; Sak et al. 2014): r = o tanh(c'), h' = W_hr r,
so the step's backward first maps dh' [B, P] back to dr = dh' W_hr [B, H], which takes
dh''s place above, and dW_hr = sum over steps of dh'^T r.

With the regularisers' masks (``_common``): U reads h_in = m * h (recurrent dropout), so
dh_prev = m * (U^T da) and dU = sum da^T h_in; zoneout mixes after the step,
h_t = k^h_t h + (1 - k^h_t) h', c_t = k^c_t c + (1 - k^c_t) c' (h' from the un-zoned c',
as Krueger et al. 2016's zoneout LSTM), so the step's backward starts from (1 - k^h_t) dh_t and
(1 - k^c_t) dc_t, and dh_prev, dc_prev get k^h_t dh_t, k^c_t dc_t besides.
"""

from __future__ import annotations

import numpy as np

from rnnkit.nn.reference._common import (
    Array,
    Grads,
    Params,
    bias_or_zero,
    keep_masks,
    sigmoid,
    unzone,
    weight_grads,
    zone,
)


def forward(
    x: Array,
    state0: tuple[Array, ...],
    p: Params,
    *,
    recurrent_mask: Array | None = None,
    zoneout: tuple[Array | None, ...] | None = None,
):
    """x [T, B, D], state0 = (h0 [B, R], c0 [B, H]) -> (ys [T, B, R], (h_T, c_T), cache);
    R = H, or P with a projection ``p.w_hr`` [P, H]; ``recurrent_mask`` [B, R],
    ``zoneout`` (k^h [T, B, R] or None, k^c [T, B, H] or None) as ``_common``."""
    h, c = state0
    kh, kc = keep_masks(zoneout, 2)
    assert p.w_hh is not None  # a recurrent cell
    G = p.w_hh.shape[0]
    H = G // 4
    b = bias_or_zero(p.b_ih, G, x.dtype) + bias_or_zero(p.b_hh, G, x.dtype)
    ys, saved = [], []
    for t, x_t in enumerate(x):
        h_in = h if recurrent_mask is None else recurrent_mask * h
        a = x_t @ p.w_ih.T + h_in @ p.w_hh.T + b  # [B, D] @ [D, 4H] + [B, R] @ [R, 4H]
        i, f, o = (sigmoid(a[:, j * H : (j + 1) * H]) for j in (0, 1, 3))
        g = np.tanh(a[:, 2 * H : 3 * H])
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)  # [B, H]; r, when projected below
        saved.append((h_in, c, i, f, g, o, c_new))
        if p.w_hr is not None:
            h_new = h_new @ p.w_hr.T  # [B, H] @ [H, P] -> [B, P]
        h = zone(None if kh is None else kh[t], h, h_new)
        c = zone(None if kc is None else kc[t], c, c_new)
        ys.append(h)
    return np.stack(ys), (h, c), (x, p, recurrent_mask, kh, kc, saved)


def backward(cache, dys: Array, dstate_T: tuple[Array, ...]) -> Grads:
    """dys [T, B, R] and dstate_T = (dL/dh_T, dL/dc_T) -> gradients of everything."""
    x, p, m, kh, kc, saved = cache
    dh, dc_next = dstate_T
    da = np.zeros((len(x), dh.shape[0], p.w_hh.shape[0]), x.dtype)  # [T, B, 4H]
    dw_hr = None if p.w_hr is None else np.zeros_like(p.w_hr)
    for t in reversed(range(len(x))):
        _, c_prev, i, f, g, o, c = saved[t]
        dh = dh + dys[t]
        dh, dh_direct = unzone(None if kh is None else kh[t], dh)  # dh: into the step's h'
        dc_next, dc_direct = unzone(None if kc is None else kc[t], dc_next)
        tc = np.tanh(c)
        if p.w_hr is not None and dw_hr is not None:
            dw_hr += dh.T @ (o * tc)  # [P, B] @ [B, H]: dh'^T r
            dh = dh @ p.w_hr  # [B, P] @ [P, H]: dL/dr
        do = dh * tc
        dc = dc_next + dh * o * (1.0 - tc**2)
        da[t] = np.concatenate(
            [
                dc * g * i * (1 - i),
                dc * c_prev * f * (1 - f),
                dc * i * (1 - g**2),
                do * o * (1 - o),
            ],
            axis=1,
        )
        dc_next = dc * f + dc_direct
        dh_in = da[t] @ p.w_hh  # [B, 4H] @ [4H, R]
        dh = (dh_in if m is None else m * dh_in) + dh_direct
    h_in_all = np.stack([s[0] for s in saved])  # [T, B, R]: what U multiplied
    grads = weight_grads(p, da, da, x, h_in_all)
    grads.state0 = (dh, dc_next)
    grads.w_hr = dw_hr
    return grads
