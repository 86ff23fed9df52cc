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
"""

from __future__ import annotations

import numpy as np

from rnnkit.nn.reference._common import (
    Array,
    Grads,
    Params,
    bias_or_zero,
    sigmoid,
    weight_grads,
)


def forward(x: Array, state0: tuple[Array, ...], p: Params):
    """x [T, B, D], state0 = (h0 [B, R], c0 [B, H]) -> (ys [T, B, R], (h_T, c_T), cache);
    R = H, or P with a projection ``p.w_hr`` [P, H]."""
    h, c = state0
    assert p.w_hh is not None  # a recurrent cell
    G = p.w_hh.shape[0]
    H = G // 4
    b = bias_or_zero(p.b_ih, G, x.dtype) + bias_or_zero(p.b_hh, G, x.dtype)
    ys, saved = [], []
    for x_t in x:
        a = x_t @ p.w_ih.T + h @ p.w_hh.T + b  # [B, 4H]
        i, f, o = (sigmoid(a[:, k * H : (k + 1) * H]) for k in (0, 1, 3))
        g = np.tanh(a[:, 2 * H : 3 * H])
        c_prev, h_prev = c, h
        c = f * c + i * g
        h = o * np.tanh(c)  # [B, H]; r, when projected below
        saved.append((h_prev, c_prev, i, f, g, o, c))
        if p.w_hr is not None:
            h = h @ p.w_hr.T  # [B, H] @ [H, P] -> [B, P]
        ys.append(h)
    return np.stack(ys), (h, c), (x, p, saved)


def backward(cache, dys: Array, dstate_T: tuple[Array, ...]) -> Grads:
    """dys [T, B, R] and dstate_T = (dL/dh_T, dL/dc_T) -> gradients of everything."""
    x, p, saved = cache
    dh, dc_next = dstate_T
    da = np.zeros((len(x), dh.shape[0], p.w_hh.shape[0]), x.dtype)  # [T, B, 4H]
    dw_hr = None if p.w_hr is None else np.zeros_like(p.w_hr)
    for t in reversed(range(len(x))):
        _, c_prev, i, f, g, o, c = saved[t]
        dh = dh + dys[t]
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
        dc_next = dc * f
        dh = da[t] @ p.w_hh  # [B, 4H] @ [4H, R]
    h_prev = np.stack([s[0] for s in saved])
    grads = weight_grads(p, da, da, x, h_prev)
    grads.state0 = (dh, dc_next)
    grads.w_hr = dw_hr
    return grads
