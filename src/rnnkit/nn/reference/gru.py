"""NumPy reference for the GRU over a whole sequence, with hand-written BPTT.

Both forms of ``rnnkit.nn.cells.gru`` (gate order r, z, n). Write gx = W x + b_i and
gh = U h + b_h, split into their r, z, n blocks. Forward:
    r = sigmoid(gx_r + gh_r),  z = sigmoid(gx_z + gh_z)
    n = tanh(gx_n + r * gh_n)                     reset_after=True
    n = tanh(gx_n + U_n (r * h) + b_hn)           reset_after=False
    h' = (1 - z) * n + z * h

Backward of one step, given dh' = dL/dh':
    dn = dh' (1 - z),  dz = dh' (h - n),  dh = dh' z        (direct path)
    dan = dn (1 - n^2)                                      (n's pre-activation)
    reset_after:  dr = dan * gh_n,            dgh_n = dan * r
    reset_before: d(rh) = U_n^T dan,  dr = d(rh) * h,  dh += d(rh) * r
    dar = dr r (1 - r),  daz = dz z (1 - z)
    dgx = [dar, daz, dan];  dh += U_rz^T [dar, daz]  (+ U_n^T dgh_n, reset_after)
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


def forward(x: Array, state0: tuple[Array, ...], p: Params, reset_after: bool = True):
    """x [T, B, D], state0 = (h0 [B, H],) -> (ys [T, B, H], (h_T,), cache)."""
    (h,) = state0
    assert p.w_hh is not None  # a recurrent cell
    H = h.shape[1]
    b_ih = bias_or_zero(p.b_ih, 3 * H, x.dtype)
    b_hh = bias_or_zero(p.b_hh, 3 * H, x.dtype)
    ys, saved = [], []
    for x_t in x:
        gx = x_t @ p.w_ih.T + b_ih  # [B, 3H]
        gh_rz = h @ p.w_hh[: 2 * H].T + b_hh[: 2 * H]  # [B, 2H]
        r = sigmoid(gx[:, :H] + gh_rz[:, :H])
        z = sigmoid(gx[:, H : 2 * H] + gh_rz[:, H:])
        if reset_after:
            gh_n = h @ p.w_hh[2 * H :].T + b_hh[2 * H :]  # [B, H]
            n = np.tanh(gx[:, 2 * H :] + r * gh_n)
        else:
            gh_n = None
            n = np.tanh(gx[:, 2 * H :] + (r * h) @ p.w_hh[2 * H :].T + b_hh[2 * H :])
        saved.append((h, r, z, n, gh_n))
        h = (1.0 - z) * n + z * h
        ys.append(h)
    return np.stack(ys), (h,), (x, state0, p, reset_after, saved)


def backward(cache, dys: Array, dstate_T: tuple[Array, ...]) -> Grads:
    """dys [T, B, H] = dL/dys and dstate_T = (dL/dh_T,) -> gradients of everything."""
    x, (h0,), p, reset_after, saved = cache
    H = h0.shape[1]
    T = len(x)
    dgx = np.zeros((T, *h0.shape[:1], 3 * H), x.dtype)  # [T, B, 3H]
    dgh = np.zeros_like(dgx)  # dL/d(U h_{t-1} + b_h), reset_after only for the n block
    drh = np.zeros((T, *h0.shape), x.dtype)  # reset_before: dL/d(r * h_{t-1}) [T, B, H]
    (dh,) = dstate_T
    for t in reversed(range(T)):
        h, r, z, n, gh_n = saved[t]
        dh = dh + dys[t]
        dn = dh * (1.0 - z)
        dz = dh * (h - n)
        dh_prev = dh * z
        dan = dn * (1.0 - n**2)
        if reset_after:
            dr = dan * gh_n
            dgh[t, :, 2 * H :] = dan * r
        else:
            drh[t] = dan @ p.w_hh[2 * H :]  # [B, H] @ [H, H]
            dr = drh[t] * h
            dh_prev = dh_prev + drh[t] * r
        dgx[t, :, :H] = dr * r * (1.0 - r)
        dgx[t, :, H : 2 * H] = dz * z * (1.0 - z)
        dgx[t, :, 2 * H :] = dan
        dgh[t, :, : 2 * H] = dgx[t, :, : 2 * H]
        if reset_after:
            dh = dh_prev + dgh[t] @ p.w_hh  # [B, 3H] @ [3H, H]
        else:
            dh = dh_prev + dgh[t, :, : 2 * H] @ p.w_hh[: 2 * H]
    h_prev = np.stack([s[0] for s in saved])  # [T, B, H]
    g = weight_grads(p, dgx, dgh, x, h_prev)
    if not reset_after:
        # U_n multiplies r * h, not h, and its bias receives dan (= dgx's n block).
        assert g.w_hh is not None
        r_all = np.stack([s[1] for s in saved])
        g.w_hh[2 * H :] = np.einsum("tbg,tbh->gh", dgx[..., 2 * H :], r_all * h_prev)
        if g.b_hh is not None:
            g.b_hh[2 * H :] = dgx[..., 2 * H :].sum(axis=(0, 1))
    g.state0 = (dh,)
    return g
