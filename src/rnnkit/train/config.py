"""The trainer's and the optimiser's typed configs, torch-free so that building the
command line's help never imports torch (``rnnkit.train.optim`` and
``rnnkit.train.trainer`` re-export them)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rnnkit.common.config import ConfigError, option

OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad")
SCHEDULES = ("constant", "step", "plateau", "cosine")
THREADS_PER_CORE = 4
"""The most torch threads a run may ask for per CPU core (``TrainerConfig.threads``)."""


@dataclass
class OptimConfig:
    """The optimiser and its learning-rate schedule."""

    optimizer: str = option("adam", "update rule", choices=OPTIMIZERS)
    lr: float = option(
        2e-3,
        "base learning rate (at most 100: above that no optimiser here makes progress; "
        "AWD-LSTM's SGD, the largest in common use, takes 30)",
        gt=0,
        max=100,
    )
    momentum: float = option(0.0, "momentum (sgd, rmsprop); 1 or more never forgets", min=0, lt=1)
    weight_decay: float = option(0.0, "L2 penalty coefficient", min=0)
    schedule: str = option("constant", "learning-rate schedule", choices=SCHEDULES)
    decay: float = option(0.5, "multiplier per decay (step, plateau)", gt=0, max=1)
    decay_after: int = option(4, "step: epochs at the full rate before decaying", min=0)
    patience: int = option(0, "plateau: epochs without improvement before decaying", min=0)
    min_lr: float = option(0.0, "cosine: the final rate (at most lr)", min=0)
    warmup_steps: int = option(0, "linear warm-up steps", min=0)

    def validate(self) -> OptimConfig:
        """The checks that span fields (each field's range is in its ``option``)."""
        if self.min_lr > self.lr:
            raise ConfigError(
                f"--optim.min_lr must be <= --optim.lr ({self.lr}), got {self.min_lr}"
            )
        return self


@dataclass
class TrainerConfig:
    """How long to train, clipping, checkpoints and reporting."""

    epochs: int = option(2, "passes over the training data", min=1)
    max_steps: int | None = option(None, "stop after this many optimiser steps in total", min=1)
    max_minutes: float | None = option(
        None, "stop (with a checkpoint) after this much wall time in this invocation", gt=0
    )
    clip_norm: float | None = option(
        5.0, "clip the global gradient L2 norm to this (none: no clipping)", gt=0
    )
    clip_value: float | None = option(
        None, "clip each gradient component to +-this (none: no clipping)", gt=0
    )
    seed: int = option(0, "seed for initialisation, dropout and batch order", min=0, max=2**32 - 1)
    out: str = option("runs/lm", "run directory (a fresh numbered one if it already holds a run)")
    checkpoint_every: int = option(0, "also checkpoint every N steps (0: at epoch ends)", min=0)
    progress: bool = option(True, "show a progress bar")
    threads: int = option(
        0, f"CPU threads for torch (0: torch's default; at most {THREADS_PER_CORE} per core)", min=0
    )
    device: str = option("cpu", "cpu, cuda, or auto (cuda when available)")
    precision: str = option(
        "fp32",
        "bf16: forward passes and losses under bf16 autocast (parameters, their gradients "
        "and the optimiser stay fp32)",
        choices=("fp32", "bf16"),
    )
    average: float = option(
        0.0,
        "keep an exponential moving average of the weights with this decay per step "
        "(e.g. 0.999; 0: off); validation, checkpoints and predictions use the average",
        min=0,
        lt=1,
    )

    def validate(self) -> TrainerConfig:
        """The bound that depends on this machine: threads, at most a few per core (more
        only oversubscribe; a huge count exhausts memory in the thread pool)."""
        cores = os.cpu_count() or 1
        if self.threads > THREADS_PER_CORE * cores:
            raise ConfigError(
                f"--trainer.threads must be <= {THREADS_PER_CORE * cores} "
                f"({THREADS_PER_CORE} per core, {cores} cores), got {self.threads}"
            )
        return self
