"""Layer norm over a row, forward and hand-written backward, for the layer-normalised
cells' references (``lstm_ln``, ``gru_ln``), and their parameter containers.

Forward, over the last axis of a [B, N] (Ba et al. 2016, eq. 4; ``rnnkit.nn.cells.layer_norm``):
    mu = mean(a),  var = mean((a - mu)^2),  r = 1 / sqrt(var + eps)
    x^ = (a - mu) r,  y = g x^ + b                       g, b [N]

Backward, given dy = dL/dy [B, N]. With dx^ = g dy (element-wise) and
d x^_j / d a_k = r (delta_jk - 1/N) - r x^_j x^_k / N (the second term from r's
dependence on var, eps included):
    da = r (dx^ - mean(dx^) - x^ mean(dx^ x^))           means over the row
    dg = sum over B of dy x^,  db = sum over B of dy
(for a scalar gain g this is da = (g r)(dy - mean(dy) - x^ mean(dy x^)); with a gain per
entry the gain multiplies dy before the means.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rnnkit.nn.reference._common import Array, Grads, Params

EPS = 1e-5
"""The default eps (``rnnkit.nn.cells.layer_norm.EPS``; the cell records pass theirs)."""
Saved = tuple[Array, Array]
"""(x^ [B, N], r [B, 1]): what the backward needs of one forward."""


def norm_forward(a: Array, gain: Array, bias: Array | None, eps: float) -> tuple[Array, Saved]:
    """a [B, N] -> (y = gain x^ + bias [B, N], saved)."""
    mu = a.mean(axis=-1, keepdims=True)  # [B, 1]
    var = ((a - mu) ** 2).mean(axis=-1, keepdims=True)  # [B, 1], biased
    r = 1.0 / np.sqrt(var + eps)
    xhat = (a - mu) * r
    y = gain * xhat if bias is None else gain * xhat + bias
    return y, (xhat, r)


def norm_backward(dy: Array, gain: Array, saved: Saved) -> tuple[Array, Array, Array]:
    """dy [B, N] -> (da [B, N], dgain [N], dbias [N])."""
    xhat, r = saved
    dxhat = dy * gain  # [B, N]
    mean_d = dxhat.mean(axis=-1, keepdims=True)  # [B, 1]
    mean_dx = (dxhat * xhat).mean(axis=-1, keepdims=True)  # [B, 1]
    da = r * (dxhat - mean_d - xhat * mean_dx)
    return da, (dy * xhat).sum(axis=0), dy.sum(axis=0)


@dataclass
class LayerNormParams(Params):
    """``Params`` plus the layer norms' parameters, named as the layers name them:
    g_ih, g_hh [G]; the LSTM's cell norm g_c [H] and b_c [H] (None without bias). The
    biases b_ih, b_hh are added after the norms of W x and U h."""

    ln_ih_weight: Array = field(kw_only=True)  # [G]
    ln_hh_weight: Array = field(kw_only=True)  # [G]
    ln_c_weight: Array | None = field(default=None, kw_only=True)  # [H], LSTM only
    ln_c_bias: Array | None = field(default=None, kw_only=True)  # [H], LSTM with bias


@dataclass
class LayerNormGrads(Grads):
    """``Grads`` plus the gradients of the layer norms' parameters (None where absent)."""

    ln_ih_weight: Array | None = None
    ln_hh_weight: Array | None = None
    ln_c_weight: Array | None = None
    ln_c_bias: Array | None = None


def input_grads(p: Params, dax: Array, dah: Array, x: Array, h_prev: Array) -> LayerNormGrads:
    """The matrices' and the input's gradients from dax = dL/d(W x_t) and
    dah = dL/d(U h_{t-1}), each [T, B, G] (the norms' inputs, before any bias)."""
    return LayerNormGrads(
        x=dax @ p.w_ih,  # [T, B, G] @ [G, D] -> [T, B, D]
        state0=(),
        w_ih=np.einsum("tbg,tbd->gd", dax, x),
        w_hh=np.einsum("tbg,tbh->gh", dah, h_prev),
        b_ih=None,
        b_hh=None,
    )
