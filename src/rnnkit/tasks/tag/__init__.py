"""Sequence tagging (named entities): a BiRNN-CRF with character features, tag schemes,
the linear-chain CRF and conlleval span metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.tasks.tag.api import TagRun, configure, evaluate_file, load, predict, train
    from rnnkit.tasks.tag.config import TagDataConfig, TaggerConfig, TagSettings, defaults
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
    "TagSettings",
    "TaggerConfig",
    "allowed_transitions",
    "configure",
    "convert",
    "defaults",
    "evaluate_file",
    "from_spans",
    "load",
    "predict",
    "span_scores",
    "spans",
    "train",
    "validate",
]

# Loaded on first use: ``rnnkit.tasks.tag.config`` must import without torch.
__getattr__ = lazy_exports(
    __name__,
    {
        "CRF": "rnnkit.tasks.tag.crf",
        "PRF": "rnnkit.tasks.tag.metrics",
        "SCHEMES": "rnnkit.tasks.tag.schemes",
        "SpanScores": "rnnkit.tasks.tag.metrics",
        "TagDataConfig": "rnnkit.tasks.tag.config",
        "TagError": "rnnkit.tasks.tag.schemes",
        "TagRun": "rnnkit.tasks.tag.api",
        "TagSettings": "rnnkit.tasks.tag.config",
        "TaggerConfig": "rnnkit.tasks.tag.config",
        "allowed_transitions": "rnnkit.tasks.tag.schemes",
        "configure": "rnnkit.tasks.tag.api",
        "convert": "rnnkit.tasks.tag.schemes",
        "defaults": "rnnkit.tasks.tag.config",
        "evaluate_file": "rnnkit.tasks.tag.api",
        "from_spans": "rnnkit.tasks.tag.schemes",
        "load": "rnnkit.tasks.tag.api",
        "predict": "rnnkit.tasks.tag.api",
        "span_scores": "rnnkit.tasks.tag.metrics",
        "spans": "rnnkit.tasks.tag.schemes",
        "train": "rnnkit.tasks.tag.api",
        "validate": "rnnkit.tasks.tag.schemes",
    },
)
