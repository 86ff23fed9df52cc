"""Training: one loop for every task (``trainer``), optimisers and schedules (``optim``),
their torch-free configs (``config``), checkpoints (``checkpoint``), the metrics log and
plot (``metrics``). Attributes load on first use, so ``rnnkit.train.config`` imports
without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.train.config import OptimConfig, TrainerConfig
    from rnnkit.train.trainer import FitResult, StepResult, Task, Trainer, TrainingDiverged

__all__ = [
    "FitResult",
    "OptimConfig",
    "StepResult",
    "Task",
    "Trainer",
    "TrainerConfig",
    "TrainingDiverged",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "OptimConfig": "rnnkit.train.config",
        "TrainerConfig": "rnnkit.train.config",
        **{n: "rnnkit.train.trainer" for n in ("FitResult", "StepResult", "Task", "Trainer")},
        "TrainingDiverged": "rnnkit.train.trainer",
    },
)
