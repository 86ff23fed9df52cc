"""Synthetic long-range problems: the adding problem (Hochreiter & Schmidhuber 1997), the
copy task (Arjovsky et al. 2016) and long-distance subject-verb agreement.

Generators are plain functions of a ``numpy.random.Generator`` (or an int seed), so a
seed fixes every sequence; each ``Problem`` wraps one into tensors with its loss, metrics
and "solved" criterion. ``rnnkit.synthetic.task.ProblemTask`` puts a problem on the one
trainer (``rnnkit.train``) and ``rnnkit.synthetic.experiment`` drives a run.
"""

from rnnkit.synthetic.adding import AddingProblem, adding_sequences
from rnnkit.synthetic.agreement import AgreementProblem, accuracy_by_distance, agreement_sequences
from rnnkit.synthetic.base import Batch, Problem
from rnnkit.synthetic.copy import CopyProblem, copy_sequences, memoryless_baseline

PROBLEMS: dict[str, type[Problem]] = {
    "adding": AddingProblem,
    "copy": CopyProblem,
    "agreement": AgreementProblem,
}


def make_problem(name: str, size: int) -> Problem:
    """The problem ``name`` at ``size``: T for adding and copy, the maximum number of
    modifiers between subject and verb for agreement."""
    if name not in PROBLEMS:
        raise ValueError(f"task must be one of {sorted(PROBLEMS)}, got {name!r}")
    return PROBLEMS[name](size)  # type: ignore[call-arg]


__all__ = [
    "PROBLEMS",
    "AddingProblem",
    "AgreementProblem",
    "Batch",
    "CopyProblem",
    "Problem",
    "accuracy_by_distance",
    "adding_sequences",
    "agreement_sequences",
    "copy_sequences",
    "make_problem",
    "memoryless_baseline",
]
