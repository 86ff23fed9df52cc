"""The adding problem, exactly as Hochreiter & Schmidhuber 1997 define it.

Hochreiter, S. and Schmidhuber, J. (1997), Long short-term memory, Neural Computation
9(8), section 5.4, Experiment 4 ("adding problem"):

* each step is a pair (value, marker); values are uniform in [-1, 1];
* a sequence's length is a random integer in [T, T + T/10] (T // 10 here);
* exactly two pairs are marked with 1.0: one of the first ten pairs (its value is X1),
  then one of the first T/2 - 1 pairs that are still unmarked (X2);
* every other marker is 0.0, except the first and the final pair, marked -1.0;
* if the first pair gets marked, its value is set to zero (the paper says this of X1;
  here it applies to whichever mark lands on the first pair, which only X2 can also do);
* the target, read at the sequence end, is 0.5 + (X1 + X2) / 4, the sum scaled into
  [0, 1]; a sequence is processed correctly when the absolute error is below 0.04.

Not the later variant of Le et al. 2015 / Arjovsky et al. 2016 (values in [0, 1], one
mark in each half, fixed length T, target X1 + X2). ``variable_length=False`` fixes the
length at T, for diagnostics that need a full batch; it is the only departure offered.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from rnnkit.synthetic.base import Batch, Problem, Rng, as_rng, positive

TOLERANCE = 0.04
"""A sequence is processed correctly when |prediction - target| < 0.04."""


def adding_sequences(
    rng: Rng, batch_size: int, T: int, variable_length: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> x [T_max, B, 2] (value, marker), lengths [B], target [B]; float64, time-major.

    T_max = T + T // 10 (or T if not ``variable_length``); steps past a sequence's
    length are zero.
    """
    rng = as_rng(rng)
    B = positive("batch_size", batch_size)
    T = positive("T", T, minimum=10)  # the first mark needs ten pairs
    T_max = T + T // 10 if variable_length else T
    x = np.zeros((T_max, B, 2))
    lengths = rng.integers(T, T_max + 1, size=B) if variable_length else np.full(B, T)
    target = np.empty(B)
    for b in range(B):
        L = int(lengths[b])
        values = rng.uniform(-1.0, 1.0, size=L)
        markers = np.zeros(L)
        markers[0] = markers[L - 1] = -1.0
        first = int(rng.integers(0, 10))
        unmarked = [j for j in range(L) if j != first][: T // 2 - 1]
        second = int(unmarked[rng.integers(0, len(unmarked))])
        markers[[first, second]] = 1.0
        if markers[0] == 1.0:
            values[0] = 0.0
        x[:L, b, 0], x[:L, b, 1] = values, markers
        target[b] = 0.5 + (values[first] + values[second]) / 4.0
    return x, lengths, target


class AddingProblem(Problem):
    """Regression from the state at each sequence's end; MSE loss."""

    name, input_size, output_size = "adding", 2, 1
    readout, headline, score = "final", "accuracy", "accuracy"

    def __init__(self, T: int, variable_length: bool = True) -> None:
        self.T = positive("T", T, minimum=10)
        self.variable_length = variable_length

    @property
    def max_length(self) -> int:
        return self.T + self.T // 10 if self.variable_length else self.T

    def sample(self, rng: Rng, batch_size: int) -> Batch:
        x, lengths, target = adding_sequences(rng, batch_size, self.T, self.variable_length)
        return Batch(
            torch.from_numpy(x).float(),
            torch.from_numpy(target).float(),
            torch.from_numpy(lengths) if self.variable_length else None,
        )

    def sample_full(self, rng: Rng, batch_size: int) -> Batch:
        """Every sequence exactly T steps (the one departure from H&S 1997)."""
        return AddingProblem(self.T, variable_length=False).sample(rng, batch_size)

    def loss(self, pred: Tensor, batch: Batch) -> Tensor:
        return torch.mean((pred.squeeze(-1) - batch.target) ** 2)

    def metrics(self, pred: Tensor, batch: Batch) -> dict[str, float]:
        err = (pred.squeeze(-1) - batch.target).abs()
        return {
            "accuracy": float((err < TOLERANCE).float().mean()),
            "mse": float((err**2).mean()),
            "max_abs_error": float(err.max()),
        }

    def solved(self, metrics: dict[str, float]) -> bool:
        """Every held-out sequence processed correctly (H&S 1997 stop when the 2000
        most recent training sequences all were)."""
        return metrics["accuracy"] == 1.0

    def labels(self, batch: Batch, index: int) -> list[str]:
        x = batch.x[:, index]
        T = int(batch.lengths[index]) if batch.lengths is not None else x.shape[0]
        return [f"{float(v):+.1f}" + ("*" if m == 1 else "") for v, m in x[:T].tolist()]
