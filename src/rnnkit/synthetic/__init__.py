"""Synthetic long-range tasks: the adding problem (Hochreiter & Schmidhuber 1997), the
copy task (Arjovsky et al. 2016) and long-distance subject-verb agreement.

Generators are plain functions of a ``numpy.random.Generator`` (or an int seed), so a
seed fixes every sequence; each ``Task`` wraps one into tensors with its loss, metrics
and "solved" criterion for ``rnnkit.synthetic.experiment``.
"""

from rnnkit.synthetic.adding import AddingTask, adding_sequences
from rnnkit.synthetic.agreement import AgreementTask, accuracy_by_distance, agreement_sequences
from rnnkit.synthetic.base import Batch, Task
from rnnkit.synthetic.copy import CopyTask, copy_sequences, memoryless_baseline

TASKS = {"adding": AddingTask, "copy": CopyTask, "agreement": AgreementTask}


def make_task(name: str, size: int) -> Task:
    """The task ``name`` at ``size``: T for adding and copy, the maximum number of
    modifiers between subject and verb for agreement."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name](size)


__all__ = [
    "TASKS",
    "AddingTask",
    "AgreementTask",
    "Batch",
    "CopyTask",
    "Task",
    "accuracy_by_distance",
    "adding_sequences",
    "agreement_sequences",
    "copy_sequences",
    "make_task",
    "memoryless_baseline",
]
