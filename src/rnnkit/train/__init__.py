"""Training: one loop for every task (``trainer``), optimisers and schedules (``optim``),
checkpoints (``checkpoint``), the metrics log and plot (``metrics``), and the tasks that
plug into it (``lm``: language modelling)."""

from rnnkit.train.optim import OptimConfig
from rnnkit.train.trainer import (
    FitResult,
    StepResult,
    Task,
    Trainer,
    TrainerConfig,
    TrainingDiverged,
)

__all__ = [
    "FitResult",
    "OptimConfig",
    "StepResult",
    "Task",
    "Trainer",
    "TrainerConfig",
    "TrainingDiverged",
]
