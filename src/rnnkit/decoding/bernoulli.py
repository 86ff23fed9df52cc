"""Sampling binary vectors one step at a time: every unit of the next step is an
independent Bernoulli draw from its sigmoid, and the drawn step is fed back as the next
input (piano rolls, Boulanger-Lewandowski et al. 2012).

    p_t = sigmoid(logits_t / temperature)     logits_t [N, P] after the steps so far
    x_{t+1} ~ Bernoulli(p_t)                  each of the P units on its own

Shapes: N samples drawn as one batch, P units per step.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor


class BinaryStepModel(Protocol):
    """What Bernoulli sampling needs: ``model(x [T, N, P], state) -> (logits [T, N, P],
    state)`` predicting the next step, and ``torch.nn.Module``'s train/eval switch."""

    training: bool

    def __call__(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]: ...
    def eval(self) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...


@torch.no_grad()
def sample_bernoulli(
    model: BinaryStepModel,
    start: Tensor,
    steps: int,
    *,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """start [T0, N, P] (T0 >= 1, read first) -> the ``steps`` drawn after it [steps, N, P]."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if start.dim() != 3 or start.shape[0] < 1:
        raise ValueError(f"start must be [T0 >= 1, N, P], got shape {tuple(start.shape)}")
    was_training = model.training
    model.eval()
    try:
        logits, state = model(start)  # [T0, N, P]
        out = []
        for _ in range(steps):
            probs = torch.sigmoid(logits[-1] / temperature)  # [N, P]
            step = torch.bernoulli(probs, generator=generator)
            out.append(step)
            logits, state = model(step[None], state)  # [1, N, P]
        return torch.stack(out)  # [steps, N, P]
    finally:
        model.train(was_training)
