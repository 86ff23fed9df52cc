"""The one time-loop runner: a cell's step over a sequence, for one layer.

Every layer feature (depth, directions, variable lengths, carried state) is built here
and in ``rnnkit.nn.layers`` from a cell's ``step``, so a new cell gets all of them for free.
This is the composite implementation: autograd differentiates through the loop, and it
runs on any device and dtype. Fused kernels (``rnnkit.nn.kernels``) implement the same
``run_layer`` contract.

Variable lengths use a mask rather than packing: at step t a sequence with length
L <= t keeps its state (so the reverse direction starts at each sequence's own end,
from the initial state) and emits zeros.

Per-step regulariser noise (recurrent dropout, zoneout) arrives as one
``rnnkit.nn.noise.StepNoise`` per direction: the masked h goes to the cell's step as
``h_in`` (the recurrent product only), zoneout mixes each new state with the previous one
before the length mask holds finished sequences.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.nn.cells import Cell, State
from rnnkit.nn.noise import StepNoise

DirectionWeights = tuple["Tensor | None", ...]
"""(w_ih [G, D], w_hh [G, R], b_ih [G] or None, b_hh [G] or None, *extra): the tuple
``Cell.direction_weights`` builds; R is h's size, extra the cell's further parameters."""


def step_mask(lengths: Tensor | None, T: int) -> Tensor | None:
    """[T, B, 1] bool, True where step t lies within a sequence; None if all are full."""
    if lengths is None:
        return None
    if not torch.compiler.is_compiling() and bool((lengths == T).all()):
        return None  # (traced, the mask stays: a branch on values would break the graph)
    steps = torch.arange(T, device=lengths.device)
    return (steps[:, None] < lengths[None, :])[..., None]


def run_direction(
    cell: Cell,
    x: Tensor,
    mask: Tensor | None,
    state: State,
    weights: DirectionWeights,
    reverse: bool,
    noise: StepNoise | None = None,
) -> tuple[Tensor, State]:
    """x [T, B, D] -> (out [T, B, R], final state), one direction of one layer; R is h's
    size (``cell.output_size``); ``noise`` as ``StepNoise`` documents."""
    w_ih, w_hh, b_ih, b_hh, *extra = weights
    assert w_ih is not None  # every cell has an input projection
    T = x.shape[0]
    gx = F.linear(x, w_ih, b_ih)  # [T, B, G]: every step's input projection in one GEMM
    # unbind, not gx[t]: the backward of T separate selects fills T zero tensors of the
    # whole [T, B, G] (quadratic in T); unbind's backward stacks the T gradients once.
    steps = gx.unbind(0)
    outs: list[Tensor] = [x.new_empty(0)] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        if noise is not None and noise.recurrent is not None:
            h_in = state[0] * noise.recurrent  # [B, R]: recurrent dropout, W_hh h_in only
            new = cell.step(steps[t], state, w_hh, b_hh, *extra, h_in=h_in)
        else:
            new = cell.step(steps[t], state, w_hh, b_hh, *extra)
        if noise is not None:
            new = noise.zoned(t, new, state)  # zoneout, before the length mask
        if mask is not None:
            new = tuple(torch.where(mask[t], n, s) for n, s in zip(new, state, strict=True))
            outs[t] = torch.where(mask[t], new[0], 0.0)
        else:
            outs[t] = new[0]
        state = new
    return torch.stack(outs), state


def run_layer(
    cell: Cell,
    x: Tensor,
    lengths: Tensor | None,
    states: list[State],
    weights: list[DirectionWeights],
    noise: Sequence[StepNoise | None] | None = None,
) -> tuple[Tensor, list[State]]:
    """One layer, all its directions: x [T, B, D] -> (out [T, B, dirs*R], final states).

    ``states`` and ``weights`` hold one entry per direction (forward, then reverse);
    ``noise``, when given, too (``rnnkit.nn.noise.StepNoise`` or None each): the
    recurrent-dropout and zoneout masks, the contract a kernel with ``Kernel.noise``
    implements.
    """
    mask = step_mask(lengths, x.shape[0])
    per_direction = [None] * len(states) if noise is None else list(noise)
    outs, finals = [], []
    for direction, (state, w, n) in enumerate(zip(states, weights, per_direction, strict=True)):
        out, final = run_direction(cell, x, mask, state, w, reverse=direction == 1, noise=n)
        outs.append(out)
        finals.append(final)
    return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0], finals
