"""Sequence tagging: tag schemes, the linear-chain CRF and conlleval span metrics."""

from rnnkit.tagging.crf import CRF
from rnnkit.tagging.metrics import PRF, SpanScores, span_scores
from rnnkit.tagging.schemes import (
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
    "TagError",
    "allowed_transitions",
    "convert",
    "from_spans",
    "span_scores",
    "spans",
    "validate",
]
