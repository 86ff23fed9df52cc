"""What a synthetic long-range problem provides to the experiment and diagnostics.

A ``Problem`` is a data source with a loss, not a trainer task: ``rnnkit.synthetic.task``
adapts one to the trainer's ``Task`` protocol. A problem samples batches from a
``numpy.random.Generator`` (so a seed fixes every sequence), says how a model's output is
read (``readout``), and owns its loss, its metrics and its "solved" criterion. Batches
are time-major, like rnnkit's layers: x [T, B, D].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
from torch import Tensor

Rng = np.random.Generator | int
"""A generator, or an int seed for ``numpy.random.default_rng``."""


def as_rng(rng: Rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, bool) or not isinstance(rng, int | np.integer):
        raise TypeError(f"rng must be a numpy Generator or an int seed, got {rng!r}")
    return np.random.default_rng(int(rng))


def positive(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass
class Batch:
    """x [T, B, D] float; target (task-specific); lengths [B] when sequences differ in
    length, else None; tokens [T, B] for symbolic tasks; info: per-sequence extras."""

    x: Tensor
    target: Tensor
    lengths: Tensor | None = None
    tokens: Tensor | None = None
    info: dict[str, Tensor] = field(default_factory=dict)


class Problem(ABC):
    """A synthetic problem: its sizes, how a model's output is read, batches, loss,
    metrics and "solved" criterion."""

    name: str
    input_size: int
    output_size: int
    readout: str
    """"final": the head reads h at each sequence's last step, pred [B, O];
    "every_step": the head reads every output, pred [T, B, O]."""
    headline: str
    """The metric to plot and print first."""
    score: str
    """The metric in [0, 1], higher is better, that the trainer keeps the best checkpoint
    by; every problem here is solved when it reaches 1 on the held-out set."""

    @property
    @abstractmethod
    def max_length(self) -> int:
        """The most steps a sequence of this problem has: the longest dependency a model
        may have to learn, which chrono initialisation sets its memory for
        (``rnnkit.synthetic.gate_init``)."""

    @abstractmethod
    def sample(self, rng: Rng, batch_size: int) -> Batch: ...

    def sample_full(self, rng: Rng, batch_size: int) -> Batch:
        """A batch whose sequences all have the same length (lengths None), for the
        step-by-step diagnostics."""
        batch = self.sample(rng, batch_size)
        if batch.lengths is not None:
            raise NotImplementedError(f"problem {self.name!r} has no full-length batches")
        return batch

    @abstractmethod
    def loss(self, pred: Tensor, batch: Batch) -> Tensor: ...

    @abstractmethod
    def metrics(self, pred: Tensor, batch: Batch) -> dict[str, float]: ...

    @abstractmethod
    def solved(self, metrics: dict[str, float]) -> bool: ...

    @abstractmethod
    def labels(self, batch: Batch, index: int) -> list[str]:
        """One short readable label per input step of sequence ``index`` (heat maps)."""
