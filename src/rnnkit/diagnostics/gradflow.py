"""Gradient flow through time: ||dL/dh_t|| for every step and layer, and the norms of
the Jacobian products ||dh_T/dh_t|| (Bengio et al. 1994; Pascanu et al. 2013, section 2).

For a tanh RNN, dh_T/dh_t = prod_{k=t+1..T} diag(1 - h_k^2) U: a product of T - t
matrices whose norm shrinks or grows geometrically with T - t (Pascanu et al. 2013,
section 3.1: vanishing when the largest singular value of U is below 1/gamma, gamma = 1
for tanh, and possibly exploding above). Gated cells add paths with factor z (GRU) or f
(LSTM) that can stay near 1. Both quantities are taken here with autograd on the
step-by-step replay ``unroll``, which equals the layer's run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rnnkit.diagnostics.unroll import unroll
from rnnkit.nn.layers import RNNBase

LossFn = Callable[[Tensor, "Tensor | tuple[Tensor, ...]"], Tensor]
"""loss_fn(output, h_n) -> scalar, called exactly as on ``layer(x, hx)``'s return."""


@dataclass
class GradientFlow:
    """``norms[l, d, t]``: ||dL/dh_t|| of layer l, direction d at step t (time order), the
    2-norm over the H units of each sequence, averaged over the batch. ``per_sequence``
    [L, dirs, T, B] keeps the batch axis. dL/dh_t is the total derivative: through the
    output at t and through every later state (for the LSTM, with c_t held fixed)."""

    norms: np.ndarray
    per_sequence: np.ndarray
    loss: float

    def ratio(self, layer: int = 0, direction: int = 0) -> float:
        """||dL/dh_first|| / ||dL/dh_last|| in processing order: < 1 means the gradient
        that reaches the earliest step is smaller than the one at the latest."""
        n = self.norms[layer, direction]
        first, last = (n[-1], n[0]) if direction == 1 else (n[0], n[-1])
        return float(first / last) if last > 0 else float("inf")


def gradient_flow(
    layer: RNNBase,
    x: Tensor,
    loss_fn: LossFn,
    hx: Tensor | tuple[Tensor, Tensor] | None = None,
) -> GradientFlow:
    """||dL/dh_t|| for every step t, layer and direction of ``layer`` on batch ``x``.

    x: [T, B, D] ([B, T, D] if batch_first), every step full. ``loss_fn(output, h_n)``
    maps what ``layer(x, hx)`` returns to a scalar loss (put any head inside it).
    Parameter ``.grad`` fields are left untouched.
    """
    run = unroll(layer, x, hx)
    loss = loss_fn(run.output_in_layer_layout(), run.final())
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor")
    hs = [h for layer_states in run.states for d in layer_states for h in (s[0] for s in d)]
    grads = torch.autograd.grad(loss, hs, allow_unused=True)
    L, dirs, T = layer.num_layers, layer.num_directions, len(run.states[0][0])
    B = hs[0].shape[0]
    per_seq = np.zeros((L * dirs * T, B))
    for k, (h, g) in enumerate(zip(hs, grads, strict=True)):
        g = torch.zeros_like(h) if g is None else g  # [B, H]
        per_seq[k] = g.detach().double().norm(dim=1).cpu().numpy()
    by_step = per_seq.reshape(L, dirs, T, B)
    return GradientFlow(by_step.mean(axis=3), by_step, float(loss.detach()))


def jacobian_norms(
    layer: RNNBase,
    x: Tensor,
    *,
    layer_index: int = 0,
    direction: int = 0,
    hx: Tensor | tuple[Tensor, Tensor] | None = None,
) -> np.ndarray:
    """[T]: ||dh_last/dh_t||_2 (spectral norm) for each step t, averaged over the batch.

    Within one layer-direction with its input held fixed; "last" is the final step in
    processing order (T-1, or 0 for the reverse direction), where the value is 1. Exact,
    via H backward passes, one per row of the Jacobian: meant for small H and T.
    """
    if not 0 <= layer_index < layer.num_layers:
        raise ValueError(f"layer_index must be in [0, {layer.num_layers}), got {layer_index}")
    if not 0 <= direction < layer.num_directions:
        raise ValueError(f"direction must be in [0, {layer.num_directions}), got {direction}")
    run = unroll(layer, x, hx)
    hs = run.hidden(layer_index, direction)  # T x [B, H]
    last = hs[0] if direction == 1 else hs[-1]
    H = last.shape[1]
    rows: list[list[Tensor]] = []
    for i in range(H):
        # Sequences are independent, so summing row i over the batch keeps them apart.
        g = torch.autograd.grad(last[:, i].sum(), hs, retain_graph=True, allow_unused=True)
        rows.append(
            [torch.zeros_like(h) if gi is None else gi for h, gi in zip(hs, g, strict=True)]
        )
    J = torch.stack([torch.stack(r) for r in rows], dim=2)  # [T, B, H (row i), H]
    return torch.linalg.matrix_norm(J.detach().double(), ord=2).mean(dim=1).cpu().numpy()
