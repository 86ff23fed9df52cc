"""The copy (memory) task of Arjovsky, Shah and Bengio 2016, Unitary evolution recurrent
neural networks, section 4.1.

Ten categories a_0 .. a_9: a_0 is the blank, a_9 the delimiter, a_1 .. a_8 the symbols.
An input has T + 20 steps: 10 symbols drawn uniformly with replacement from a_1 .. a_8,
then T - 1 blanks, the delimiter, and 10 more blanks. The target is T + 10 blanks
followed by the 10 symbols in order. Loss: the cross-entropy of the category predicted
at every step, averaged over all T + 20 steps. A model with no memory does best by
predicting blanks for T + 10 steps and guessing uniformly over the 8 symbols for the
last 10, a cross-entropy of 10 log(8) / (T + 20): the baseline to beat.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.synthetic.base import Batch, Problem, Rng, as_rng, positive

BLANK, DELIMITER, NUM_CATEGORIES, NUM_SYMBOLS, MEMORY = 0, 9, 10, 8, 10
_GLYPHS = "_12345678:"


def copy_sequences(rng: Rng, batch_size: int, T: int) -> tuple[np.ndarray, np.ndarray]:
    """-> inputs [T + 20, B], targets [T + 20, B], int64 categories, time-major."""
    rng = as_rng(rng)
    B = positive("batch_size", batch_size)
    T = positive("T", T)
    symbols = rng.integers(1, NUM_SYMBOLS + 1, size=(MEMORY, B))  # a_1 .. a_8
    inputs = np.full((T + 2 * MEMORY, B), BLANK, dtype=np.int64)
    inputs[:MEMORY] = symbols
    inputs[MEMORY + T - 1] = DELIMITER
    targets = np.full_like(inputs, BLANK)
    targets[T + MEMORY :] = symbols
    return inputs, targets


def memoryless_baseline(T: int) -> float:
    """10 log(8) / (T + 20): the cross-entropy (nats) of the best memoryless strategy."""
    return MEMORY * math.log(NUM_SYMBOLS) / (positive("T", T) + 2 * MEMORY)


class CopyProblem(Problem):
    """Per-step classification over the 10 categories; one-hot inputs."""

    name, input_size, output_size = "copy", NUM_CATEGORIES, NUM_CATEGORIES
    readout, headline, score = "every_step", "cross_entropy", "recall_accuracy"

    def __init__(self, T: int) -> None:
        self.T = positive("T", T)

    @property
    def max_length(self) -> int:
        return self.T + 2 * MEMORY

    def sample(self, rng: Rng, batch_size: int) -> Batch:
        inputs, targets = copy_sequences(rng, batch_size, self.T)
        tokens = torch.from_numpy(inputs)
        x = F.one_hot(tokens, NUM_CATEGORIES).float()  # [T + 20, B, 10]
        return Batch(x, torch.from_numpy(targets), tokens=tokens)

    def loss(self, pred: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(pred.flatten(0, 1), batch.target.flatten())  # mean over T, B

    def metrics(self, pred: Tensor, batch: Batch) -> dict[str, float]:
        recalled = pred[-MEMORY:].argmax(-1) == batch.target[-MEMORY:]
        return {
            "cross_entropy": float(self.loss(pred, batch)),
            "baseline": memoryless_baseline(self.T),
            "recall_accuracy": float(recalled.float().mean()),
        }

    def solved(self, metrics: dict[str, float]) -> bool:
        """Every recalled symbol of the held-out set right."""
        return metrics["recall_accuracy"] == 1.0

    def labels(self, batch: Batch, index: int) -> list[str]:
        assert batch.tokens is not None
        return [_GLYPHS[int(c)] for c in batch.tokens[:, index]]
