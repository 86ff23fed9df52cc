"""Optimisers and learning-rate schedules, from one typed config.

The schedule is a pure function of (epoch, step, plateau state), not a
``torch.optim.lr_scheduler`` object, so its whole state is a few JSON numbers in the
checkpoint and a resumed run sets exactly the learning rate the uninterrupted one had.

    constant   lr
    step       lr * decay ** max(0, epoch - decay_after)       (epochs counted from 1;
               Zaremba et al. 2014: lr 1, halved each epoch after epoch 4)
    plateau    lr * decay ** (number of reductions): reduce when the validation loss has
               not improved for more than ``patience`` epochs
    cosine     min_lr + (lr - min_lr) * (1 + cos(pi * step / total_steps)) / 2
               (Loshchilov & Hutter 2017, one cycle without restarts)

Every schedule has an optional linear warm-up over the first ``warmup_steps`` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from rnnkit.common.config import check
from rnnkit.train.config import OPTIMIZERS, SCHEDULES, OptimConfig

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "OptimConfig",
    "Schedule",
    "clip_gradients",
    "make_optimizer",
    "set_lr",
]


def make_optimizer(config: OptimConfig, params) -> torch.optim.Optimizer:
    c = check(config, "optim")
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    if c.optimizer == "adam":
        return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
    if c.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
        )
    if c.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=c.lr, weight_decay=c.weight_decay)
    raise ValueError(f"optim.optimizer must be one of {', '.join(OPTIMIZERS)}, got {c.optimizer}")


@dataclass
class Schedule:
    """The learning rate at each step; ``state_dict`` is plain JSON."""

    config: OptimConfig
    total_steps: int
    best: float = math.inf
    bad_epochs: int = 0
    reductions: int = 0
    history: list[float] = field(default_factory=list)

    def lr(self, epoch: int, step: int) -> float:
        """The rate for optimiser step ``step`` (from 0) in epoch ``epoch`` (from 1)."""
        c = self.config
        if c.schedule == "step":
            lr = c.lr * c.decay ** max(0, epoch - c.decay_after)
        elif c.schedule == "plateau":
            lr = c.lr * c.decay**self.reductions
        elif c.schedule == "cosine":
            progress = min(1.0, step / max(1, self.total_steps))
            lr = c.min_lr + (c.lr - c.min_lr) * (1 + math.cos(math.pi * progress)) / 2
        else:
            lr = c.lr
        if step < c.warmup_steps:
            lr *= (step + 1) / c.warmup_steps
        return lr

    def observe(self, valid_loss: float) -> None:
        """Feed one epoch's validation loss (drives ``plateau``)."""
        self.history.append(valid_loss)
        if valid_loss < self.best:
            self.best, self.bad_epochs = valid_loss, 0
        else:
            self.bad_epochs += 1
            if self.config.schedule == "plateau" and self.bad_epochs > self.config.patience:
                self.reductions += 1
                self.bad_epochs = 0

    def state_dict(self) -> dict:
        best = None if math.isinf(self.best) else self.best
        return {
            "best": best,
            "bad_epochs": self.bad_epochs,
            "reductions": self.reductions,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.best = math.inf if state["best"] is None else state["best"]
        self.bad_epochs = state["bad_epochs"]
        self.reductions = state["reductions"]
        self.history = list(state["history"])


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_gradients(
    params: list[nn.Parameter], clip_norm: float | None, clip_value: float | None
) -> tuple[float, bool]:
    """Clip in place; return (the global L2 norm before clipping, whether clipping changed it).

    By norm: g <- g * clip_norm / ||g|| when ||g|| > clip_norm (Pascanu et al. 2013,
    algorithm 1). By value: each component into [-clip_value, clip_value]
    (Mikolov 2012). The norm is measured before either.
    """
    grads = [p for p in params if p.grad is not None]
    norm = float(nn.utils.clip_grad_norm_(grads, math.inf if clip_norm is None else clip_norm))
    clipped = clip_norm is not None and norm > clip_norm
    if clip_value is not None:
        biggest = max((float(p.grad.abs().max()) for p in grads), default=0.0)  # type: ignore[union-attr]
        if biggest > clip_value:
            clipped = True
            nn.utils.clip_grad_value_(grads, clip_value)
    return norm, clipped
