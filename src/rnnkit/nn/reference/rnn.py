"""NumPy reference for the Elman RNN over a whole sequence, with hand-written BPTT.

Forward, for t = 0 .. T-1 (see ``rnnkit.nn.cells.rnn``):
    a_t = W x_t + b_i + U h_{t-1} + b_h
    h_t = act(a_t)

Backward, for t = T-1 .. 0, with dh carrying dL/dh_t from the future:
    dh    += dL/dy_t                       (the output at t is h_t)
    da_t   = dh * act'(a_t)                tanh' = 1 - h_t^2, relu' = [a_t > 0]
    dh     = U^T da_t                      (into h_{t-1})
and dW = sum_t da_t x_t^T, dU = sum_t da_t h_{t-1}^T, db_i = db_h = sum_t da_t,
dx_t = W^T da_t.
"""

from __future__ import annotations

import numpy as np

from rnnkit.nn.reference._common import Array, Grads, Params, bias_or_zero, weight_grads


def forward(x: Array, state0: tuple[Array, ...], p: Params, nonlinearity: str = "tanh"):
    """x [T, B, D], state0 = (h0 [B, H],) -> (ys [T, B, H], (h_T,), cache)."""
    (h,) = state0
    assert p.w_hh is not None  # a recurrent cell
    G = p.w_hh.shape[0]
    b = bias_or_zero(p.b_ih, G, x.dtype) + bias_or_zero(p.b_hh, G, x.dtype)
    ys, pre = [], []
    for x_t in x:
        a = x_t @ p.w_ih.T + h @ p.w_hh.T + b  # [B, H]
        h = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0.0)
        pre.append(a)
        ys.append(h)
    cache = (x, state0, p, nonlinearity, np.stack(pre), np.stack(ys))
    return np.stack(ys), (h,), cache


def backward(cache, dys: Array, dstate_T: tuple[Array, ...]) -> Grads:
    """dys [T, B, H] = dL/dys and dstate_T = (dL/dh_T,) -> gradients of everything."""
    x, (h0,), p, nonlinearity, pre, ys = cache
    h_prev = np.concatenate([h0[None], ys[:-1]])  # [T, B, H]: h_{t-1}
    (dh,) = dstate_T
    da = np.zeros_like(pre)  # [T, B, H]
    for t in reversed(range(len(x))):
        dh = dh + dys[t]
        act_grad = 1.0 - ys[t] ** 2 if nonlinearity == "tanh" else (pre[t] > 0).astype(x.dtype)
        da[t] = dh * act_grad
        dh = da[t] @ p.w_hh  # [B, H] @ [H, H]
    g = weight_grads(p, da, da, x, h_prev)
    g.state0 = (dh,)
    return g
