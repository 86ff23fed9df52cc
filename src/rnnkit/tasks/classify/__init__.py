"""Sentence classification (sentiment): a recurrent encoder with pooling and a linear
head; accuracy, per-class F1 and a confusion matrix."""

from rnnkit.tasks.classify.api import (
    ClassifyDataConfig,
    ClassifyRun,
    configure,
    defaults,
    load,
    predict,
    train,
)
from rnnkit.tasks.classify.model import Classifier, ClassifierConfig

__all__ = [
    "Classifier",
    "ClassifierConfig",
    "ClassifyDataConfig",
    "ClassifyRun",
    "configure",
    "defaults",
    "load",
    "predict",
    "train",
]
