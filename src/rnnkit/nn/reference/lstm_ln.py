"""NumPy reference for the layer-normalised LSTM over a whole sequence, with
hand-written BPTT (``rnnkit.nn.cells.layer_norm``; Ba et al. 2016; haste's LayerNormLSTM).

Forward (gate order i, f, g, o), with LN as in ``reference.layer_norm``:
    v  = LN(W x; g_ih, b_ih) + LN(U h; g_hh, b_hh)
    i, f, o = sigmoid(v_i, v_f, v_o),  g = tanh(v_g)
    c' = f c + i g,  m = LN(c'; g_c, b_c),  h' = o tanh(m)

Backward of one step, given dh' and dc' (the carried cell gradient):
    do = dh' tanh(m),  dm = dh' o (1 - tanh(m)^2)
    dc = dc' + LN_backward(dm)                         (and dg_c, db_c)
    dv = [dc g i(1-i), dc c f(1-f), dc i (1-g^2), do o(1-o)],  dc_prev = dc f
    d(W x) = LN_backward(dv; g_ih),  d(U h) = LN_backward(dv; g_hh)
    db_ih = db_hh = sum dv,  dg_ih = sum dv x^_x,  dg_hh = sum dv x^_h
    dh_prev = U^T d(U h)
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
    """x [T, B, D], state0 = (h0 [B, H], c0 [B, H]) -> (ys [T, B, H], (h_T, c_T), cache)."""
    assert p.ln_c_weight is not None  # the LSTM's cell norm
    h, c = state0
    H = h.shape[1]
    ax = x @ p.w_ih.T  # [T, B, D] @ [D, 4H]: every step's W x
    assert p.w_hh is not None  # a recurrent cell
    ys, saved = [], []
    for ax_t in ax:
        px, nx = norm_forward(ax_t, p.ln_ih_weight, p.b_ih, eps)  # [B, 4H]
        ph, nh = norm_forward(h @ p.w_hh.T, p.ln_hh_weight, p.b_hh, eps)  # [B, H] @ [H, 4H]
        v = px + ph
        i, f, o = (sigmoid(v[:, k * H : (k + 1) * H]) for k in (0, 1, 3))
        g = np.tanh(v[:, 2 * H : 3 * H])
        c_prev, h_prev = c, h
        c = f * c + i * g  # [B, H], carried unnormalised
        m, nc = norm_forward(c, p.ln_c_weight, p.ln_c_bias, eps)
        tm = np.tanh(m)
        h = o * tm
        saved.append((h_prev, c_prev, i, f, g, o, tm, nx, nh, nc))
        ys.append(h)
    return np.stack(ys), (h, c), (x, p, saved)


def backward(cache, dys: Array, dstate_T: tuple[Array, ...]) -> LayerNormGrads:
    """dys [T, B, H] and dstate_T = (dL/dh_T, dL/dc_T) -> gradients of everything."""
    x, p, saved = cache
    dh, dc_next = dstate_T
    T, G = len(x), p.w_hh.shape[0]
    dax = np.zeros((T, dh.shape[0], G), x.dtype)  # dL/d(W x_t)      [T, B, 4H]
    dah = np.zeros_like(dax)  # dL/d(U h_{t-1})                      [T, B, 4H]
    dg_ih, dg_hh, db = (np.zeros(G, x.dtype) for _ in range(3))
    dg_c, db_c = np.zeros_like(p.ln_c_weight), np.zeros_like(p.ln_c_weight)
    for t in reversed(range(T)):
        _, c_prev, i, f, g, o, tm, nx, nh, nc = saved[t]
        dh = dh + dys[t]
        do = dh * tm
        dm = dh * o * (1.0 - tm**2)  # dL/d LN(c')
        dc_norm, dg, dbc = norm_backward(dm, p.ln_c_weight, nc)
        dg_c += dg
        db_c += dbc
        dc = dc_next + dc_norm
        dv = np.concatenate(
            [
                dc * g * i * (1 - i),
                dc * c_prev * f * (1 - f),
                dc * i * (1 - g**2),
                do * o * (1 - o),
            ],
            axis=1,
        )  # [B, 4H]
        dax[t], dg, dbv = norm_backward(dv, p.ln_ih_weight, nx)
        dg_ih += dg
        db += dbv
        dah[t], dg, _ = norm_backward(dv, p.ln_hh_weight, nh)
        dg_hh += dg
        dc_next = dc * f
        dh = dah[t] @ p.w_hh  # [B, 4H] @ [4H, H]
    grads = input_grads(p, dax, dah, x, np.stack([s[0] for s in saved]))
    grads.state0 = (dh, dc_next)
    grads.b_ih = None if p.b_ih is None else db  # both biases are added to v
    grads.b_hh = None if p.b_hh is None else db.copy()
    grads.ln_ih_weight, grads.ln_hh_weight, grads.ln_c_weight = dg_ih, dg_hh, dg_c
    grads.ln_c_bias = None if p.ln_c_bias is None else db_c
    return grads
