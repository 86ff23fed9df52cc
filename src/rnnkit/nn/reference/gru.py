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

With the regularisers' masks (``_common``): every U above reads h_in = m * h
(recurrent dropout; reset_before: U_n (r * h_in)), so the gradient that reaches h
through them (U_rz^T [dar, daz], U_n^T dgh_n, and reset_before's d(rh) * r) is
multiplied by m, while the direct path dh' z reads h itself. Zoneout mixes after the
step: h_t = k_t h + (1 - k_t) h', so the step's backward starts from (1 - k_t) dh_t and
dh gets k_t dh_t besides.
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
    reset_after: bool = True,
    *,
    recurrent_mask: Array | None = None,
    zoneout: tuple[Array | None, ...] | None = None,
):
    """x [T, B, D], state0 = (h0 [B, H],) -> (ys [T, B, H], (h_T,), cache);
    ``recurrent_mask`` [B, H], ``zoneout`` (k [T, B, H] or None,) as ``_common``."""
    (h,) = state0
    (k,) = keep_masks(zoneout, 1)
    assert p.w_hh is not None  # a recurrent cell
    H = h.shape[1]
    b_ih = bias_or_zero(p.b_ih, 3 * H, x.dtype)
    b_hh = bias_or_zero(p.b_hh, 3 * H, x.dtype)
    ys, saved = [], []
    for t, x_t in enumerate(x):
        h_in = h if recurrent_mask is None else recurrent_mask * h  # U's input
        gx = x_t @ p.w_ih.T + b_ih  # [B, D] @ [D, 3H]
        gh_rz = h_in @ p.w_hh[: 2 * H].T + b_hh[: 2 * H]  # [B, H] @ [H, 2H]
        r = sigmoid(gx[:, :H] + gh_rz[:, :H])
        z = sigmoid(gx[:, H : 2 * H] + gh_rz[:, H:])
        if reset_after:
            gh_n = h_in @ p.w_hh[2 * H :].T + b_hh[2 * H :]  # [B, H] @ [H, H]
            n = np.tanh(gx[:, 2 * H :] + r * gh_n)
        else:
            gh_n = None
            n = np.tanh(gx[:, 2 * H :] + (r * h_in) @ p.w_hh[2 * H :].T + b_hh[2 * H :])
        saved.append((h, h_in, r, z, n, gh_n))
        h = zone(None if k is None else k[t], h, (1.0 - z) * n + z * h)
        ys.append(h)
    return np.stack(ys), (h,), (x, state0, p, reset_after, recurrent_mask, k, saved)


def backward(cache, dys: Array, dstate_T: tuple[Array, ...]) -> Grads:
    """dys [T, B, H] = dL/dys and dstate_T = (dL/dh_T,) -> gradients of everything."""
    x, (h0,), p, reset_after, m, k, saved = cache
    H = h0.shape[1]
    T = len(x)
    dgx = np.zeros((T, *h0.shape[:1], 3 * H), x.dtype)  # [T, B, 3H]
    dgh = np.zeros_like(dgx)  # dL/d(U h_in + b_h), reset_after only for the n block
    drh = np.zeros((T, *h0.shape), x.dtype)  # reset_before: dL/d(r * h_in) [T, B, H]
    (dh,) = dstate_T
    for t in reversed(range(T)):
        h, h_in, r, z, n, gh_n = saved[t]
        dh = dh + dys[t]
        dh, dh_direct = unzone(None if k is None else k[t], dh)  # dh: into the step's h'
        dn = dh * (1.0 - z)
        dz = dh * (h - n)
        dh_prev = dh * z + dh_direct  # the paths that read h itself
        dan = dn * (1.0 - n**2)
        if reset_after:
            dr = dan * gh_n
            dgh[t, :, 2 * H :] = dan * r
            dh_in = 0.0
        else:
            drh[t] = dan @ p.w_hh[2 * H :]  # [B, H] @ [H, H]
            dr = drh[t] * h_in
            dh_in = drh[t] * r
        dgx[t, :, :H] = dr * r * (1.0 - r)
        dgx[t, :, H : 2 * H] = dz * z * (1.0 - z)
        dgx[t, :, 2 * H :] = dan
        dgh[t, :, : 2 * H] = dgx[t, :, : 2 * H]
        if reset_after:
            dh_in = dh_in + dgh[t] @ p.w_hh  # [B, 3H] @ [3H, H]
        else:
            dh_in = dh_in + dgh[t, :, : 2 * H] @ p.w_hh[: 2 * H]  # [B, 2H] @ [2H, H]
        dh = dh_prev + (dh_in if m is None else m * dh_in)
    h_in_all = np.stack([s[1] for s in saved])  # [T, B, H]: what U multiplied
    g = weight_grads(p, dgx, dgh, x, h_in_all)
    if not reset_after:
        # U_n multiplies r * h_in, not h_in, and its bias receives dan (= dgx's n block).
        assert g.w_hh is not None
        r_all = np.stack([s[2] for s in saved])
        g.w_hh[2 * H :] = np.einsum("tbg,tbh->gh", dgx[..., 2 * H :], r_all * h_in_all)
        if g.b_hh is not None:
            g.b_hh[2 * H :] = dgx[..., 2 * H :].sum(axis=(0, 1))
    g.state0 = (dh,)
    return g
