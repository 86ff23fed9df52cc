"""Sequence tagging (named entities): a BiRNN-CRF with character features, tag schemes,
the linear-chain CRF and conlleval span metrics."""

from rnnkit.tasks.tag.api import TagDataConfig, TagRun, configure, defaults, load, predict, train
from rnnkit.tasks.tag.crf import CRF
from rnnkit.tasks.tag.metrics import PRF, SpanScores, span_scores
from rnnkit.tasks.tag.schemes import (
    SCHEMES,
    TagError,
    allowed_transitions,
    convert,
    from_spans,
    spans,
    validate,
)

__all__ = [
    "CRF",
    "PRF",
    "SCHEMES",
    "SpanScores",
    "TagDataConfig",
    "TagError",
    "TagRun",
    "allowed_transitions",
    "configure",
    "convert",
    "defaults",
    "from_spans",
    "load",
    "predict",
    "span_scores",
    "spans",
    "train",
    "validate",
]
