"""The trainer's and the optimiser's typed configs, torch-free so that building the
command line's help never imports torch (``rnnkit.train.optim`` and
``rnnkit.train.trainer`` re-export them)."""

from __future__ import annotations

from dataclasses import dataclass

from rnnkit.common.config import option

OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad")
SCHEDULES = ("constant", "step", "plateau", "cosine")


@dataclass
class OptimConfig:
    """The optimiser and its learning-rate schedule."""

    optimizer: str = option("adam", "update rule", choices=OPTIMIZERS)
    lr: float = option(2e-3, "base learning rate")
    momentum: float = option(0.0, "momentum (sgd, rmsprop)")
    weight_decay: float = option(0.0, "L2 penalty coefficient")
    schedule: str = option("constant", "learning-rate schedule", choices=SCHEDULES)
    decay: float = option(0.5, "multiplier per decay (step, plateau)")
    decay_after: int = option(4, "step: epochs at the full rate before decaying", min=0)
    patience: int = option(0, "plateau: epochs without improvement before decaying", min=0)
    min_lr: float = option(0.0, "cosine: the final rate")
    warmup_steps: int = option(0, "linear warm-up steps", min=0)

    def validate(self) -> OptimConfig:
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"optim.decay must be in (0, 1], got {self.decay}")
        if self.momentum < 0 or self.weight_decay < 0 or self.min_lr < 0:
            raise ValueError("optim.momentum, optim.weight_decay and optim.min_lr must be >= 0")
        return self


@dataclass
class TrainerConfig:
    """How long to train, clipping, checkpoints and reporting."""

    epochs: int = option(2, "passes over the training data", min=1)
    max_steps: int | None = option(None, "stop after this many optimiser steps in total")
    max_minutes: float | None = option(
        None, "stop (with a checkpoint) after this much wall time in this invocation"
    )
    clip_norm: float | None = option(5.0, "clip the global gradient L2 norm to this")
    clip_value: float | None = option(None, "clip each gradient component to +-this")
    seed: int = option(0, "seed for initialisation, dropout and batch order")
    out: str = option("runs/lm", "run directory (a fresh numbered one if it already holds a run)")
    checkpoint_every: int = option(0, "also checkpoint every N steps (0: at epoch ends)", min=0)
    progress: bool = option(True, "show a progress bar")
    threads: int = option(0, "CPU threads for torch (0: torch's default)", min=0)
    device: str = option("cpu", "cpu, cuda, or auto (cuda when available)")
    average: float = option(
        0.0,
        "keep an exponential moving average of the weights with this decay per step "
        "(e.g. 0.999; 0: off); validation, checkpoints and predictions use the average",
    )
