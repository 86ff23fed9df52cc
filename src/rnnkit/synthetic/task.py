"""A synthetic problem as a task of the one trainer (``rnnkit.train.trainer.Task``).

An "epoch" is the stretch between two evaluations: ``steps_per_eval`` batches of fresh
sequences. Batch ``i`` of epoch ``e`` is drawn from its own generator, seeded by
(seed, 1, e, i), so the same (epoch, start) always gives the same batches and a resumed
run sees exactly the sequences the uninterrupted one would. The held-out set is drawn
once from (seed, 0). Each validation reports the problem's loss and its ``score``, hands
the trainer the problem's other metrics (``valid_metrics``, logged in metrics.jsonl),
and says whether the problem is solved (``solved``), which stops the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from rnnkit.synthetic.base import Batch, Problem
from rnnkit.train.trainer import StepResult


def _to(batch: Batch, device: torch.device) -> Batch:
    """x and target on the model's device; lengths stay on the CPU (packing reads them)."""
    return Batch(
        batch.x.to(device),
        batch.target.to(device),
        batch.lengths,
        batch.tokens,
        {k: v.to(device) for k, v in batch.info.items()},
    )


class ProblemTask:
    """The trainer's view of ``problem``: batches of ``batch_size`` sequences,
    ``steps_per_eval`` steps between evaluations on ``eval_size`` held-out sequences."""

    unit = "seq"

    def __init__(
        self,
        problem: Problem,
        *,
        batch_size: int,
        steps_per_eval: int,
        eval_size: int,
        seed: int,
        on_eval: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        self.problem = problem
        self.batch_size = batch_size
        self.steps_per_eval = steps_per_eval
        self.seed = seed
        self.held_out = problem.sample(np.random.default_rng([seed, 0]), eval_size)
        self.on_eval = on_eval
        self.last_metrics: dict[str, float] = {}

    @property
    def score_name(self) -> str:
        return self.problem.score

    def batches_per_epoch(self, epoch: int) -> int:
        return self.steps_per_eval

    def batches(self, epoch: int, start: int) -> Iterator[Batch]:
        for i in range(start, self.steps_per_eval):
            rng = np.random.default_rng([self.seed, 1, epoch, i])
            yield self.problem.sample(rng, self.batch_size)

    def train_step(self, model: nn.Module, batch: Batch, carry: object) -> StepResult:
        batch = _to(batch, next(model.parameters()).device)
        loss = self.problem.loss(model(batch.x, batch.lengths), batch)
        return StepResult(loss, self.batch_size)

    def evaluate(self, model: nn.Module) -> tuple[float, float]:
        """-> (held-out loss, held-out score); called by the trainer under no_grad."""
        batch = _to(self.held_out, next(model.parameters()).device)
        pred = model(batch.x, batch.lengths)
        self.last_metrics = self.problem.metrics(pred, batch)
        if self.on_eval is not None:
            self.on_eval(self.last_metrics)
        return float(self.problem.loss(pred, batch)), self.last_metrics[self.problem.score]

    def describe(self, loss: float) -> dict[str, float]:
        return {}

    def valid_metrics(self) -> dict[str, float]:
        return dict(self.last_metrics)

    def solved(self) -> bool:
        return bool(self.last_metrics) and self.problem.solved(self.last_metrics)
