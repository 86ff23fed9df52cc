"""Sentence classification (sentiment): a recurrent encoder with pooling and a linear
head; accuracy, per-class F1 and a confusion matrix."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.tasks.classify.api import (
        ClassifyRun,
        configure,
        evaluate_file,
        load,
        predict,
        train,
    )
    from rnnkit.tasks.classify.config import (
        ClassifierConfig,
        ClassifyDataConfig,
        ClassifySettings,
        defaults,
    )
    from rnnkit.tasks.classify.model import Classifier

__all__ = [
    "Classifier",
    "ClassifierConfig",
    "ClassifyDataConfig",
    "ClassifyRun",
    "ClassifySettings",
    "configure",
    "defaults",
    "evaluate_file",
    "load",
    "predict",
    "train",
]

# Loaded on first use: ``rnnkit.tasks.classify.config`` must import without torch.
__getattr__ = lazy_exports(
    __name__,
    {
        "Classifier": "rnnkit.tasks.classify.model",
        "ClassifierConfig": "rnnkit.tasks.classify.config",
        "ClassifyDataConfig": "rnnkit.tasks.classify.config",
        "ClassifyRun": "rnnkit.tasks.classify.api",
        "ClassifySettings": "rnnkit.tasks.classify.config",
        "configure": "rnnkit.tasks.classify.api",
        "defaults": "rnnkit.tasks.classify.config",
        "evaluate_file": "rnnkit.tasks.classify.api",
        "load": "rnnkit.tasks.classify.api",
        "predict": "rnnkit.tasks.classify.api",
        "train": "rnnkit.tasks.classify.api",
    },
)
