"""NumPy reference for the minimal GRU and LSTM (Feng et al. 2024, arXiv:2410.01201, sec.
3; ``rnnkit.nn.cells.minimal``) over a whole sequence, with hand-written BPTT: the
sequential form, one step at a time (the parallel scan is tested against it).

Write gx = W x + b (no recurrent weights) split into its blocks k, and g the positive
candidate activation (g(k) = k + 0.5 for k >= 0, sigmoid(k) below; g'(k) = 1 or
sigmoid'(k)). Forward, and the backward of one step given dh' = dL/dh':

    minGRU (lstm=False): z = sigmoid(k_z), n = g(k_h)
        h' = (1 - z) h + z n
        dz = dh' (n - h),  dn = dh' z,  dh = dh' (1 - z)
        dk_z = dz z (1 - z),  dk_h = dn g'(k_h)

    minLSTM (lstm=True): i = sigmoid(k_i), f = sigmoid(k_f), s = f + i, n = g(k_h)
        h' = (f h + i n) / s                            (= f' h + i' n)
        df = dh' (h - n) i / s^2,  di = -dh' (h - n) f / s^2
        dn = dh' i / s,  dh = dh' f / s
        dk_i = di i (1 - i),  dk_f = df f (1 - f),  dk_h = dn g'(k_h)

``Params.w_hh``/``b_hh`` are ignored (None); ``Grads.w_hh``/``b_hh`` are None.
"""

from __future__ import annotations

import numpy as np

from rnnkit.nn.reference._common import Array, Grads, Params, bias_or_zero, sigmoid


def _g(k: Array) -> tuple[Array, Array]:
    """g(k) and g'(k)."""
    s = sigmoid(k)
    return np.where(k >= 0, k + 0.5, s), np.where(k >= 0, 1.0, s * (1.0 - s))


def forward(x: Array, state0: tuple[Array, ...], p: Params, lstm: bool = False):
    """x [T, B, D], state0 = (h0 [B, H],) -> (ys [T, B, H], (h_T,), cache)."""
    (h,) = state0
    H = h.shape[1]
    blocks = 3 if lstm else 2
    b_ih = bias_or_zero(p.b_ih, blocks * H, x.dtype)
    ys: list[Array] = []
    saved: list[tuple[Array, tuple[Array, ...], Array, Array]] = []
    for x_t in x:
        gx = x_t @ p.w_ih.T + b_ih  # [B, G]
        n, dn_dk = _g(gx[:, (blocks - 1) * H :])
        if lstm:
            i, f = sigmoid(gx[:, :H]), sigmoid(gx[:, H : 2 * H])
            saved.append((h, (i, f), n, dn_dk))
            h = (f * h + i * n) / (f + i)
        else:
            z = sigmoid(gx[:, :H])
            saved.append((h, (z,), n, dn_dk))
            h = (1.0 - z) * h + z * n
        ys.append(h)
    return np.stack(ys), (h,), (x, state0, p, lstm, saved)


def backward(cache, dys: Array, dstate_T: tuple[Array, ...]) -> Grads:
    """dys [T, B, H] = dL/dys and dstate_T = (dL/dh_T,) -> gradients of everything."""
    x, (h0,), p, lstm, saved = cache
    H = h0.shape[1]
    T = len(x)
    dgx = np.zeros((T, h0.shape[0], (3 if lstm else 2) * H), x.dtype)  # [T, B, G]
    (dh,) = dstate_T
    for t in reversed(range(T)):
        h, gates, n, dn_dk = saved[t]
        dh = dh + dys[t]
        if lstm:
            i, f = gates
            s = f + i
            dd = dh * (h - n) / s**2  # dL/df = dd i, dL/di = -dd f
            dgx[t, :, :H] = -dd * f * i * (1.0 - i)
            dgx[t, :, H : 2 * H] = dd * i * f * (1.0 - f)
            dn = dh * i / s
            dh = dh * f / s
        else:
            (z,) = gates
            dgx[t, :, :H] = dh * (n - h) * z * (1.0 - z)
            dn = dh * z
            dh = dh * (1.0 - z)
        dgx[t, :, -H:] = dn * dn_dk
    return Grads(
        x=dgx @ p.w_ih,  # [T, B, G] @ [G, D] -> [T, B, D]
        state0=(dh,),
        w_ih=np.einsum("tbg,tbd->gd", dgx, x),
        w_hh=None,
        b_ih=None if p.b_ih is None else dgx.sum(axis=(0, 1)),
        b_hh=None,
    )
