"""Sequence to sequence with attention: a bidirectional encoder, a decoder with additive or
multiplicative attention, greedy and beam search; exact match, BLEU and chrF."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.tasks.seq2seq.api import (
        Seq2SeqRun,
        Translator,
        configure,
        evaluate_file,
        load,
        train,
        translate,
    )
    from rnnkit.tasks.seq2seq.config import (
        DecodeConfig,
        Seq2SeqConfig,
        Seq2SeqDataConfig,
        Seq2SeqSettings,
        defaults,
    )
    from rnnkit.tasks.seq2seq.model import Seq2Seq

__all__ = [
    "DecodeConfig",
    "Seq2Seq",
    "Seq2SeqConfig",
    "Seq2SeqDataConfig",
    "Seq2SeqRun",
    "Seq2SeqSettings",
    "Translator",
    "configure",
    "defaults",
    "evaluate_file",
    "load",
    "train",
    "translate",
]

# Loaded on first use: ``rnnkit.tasks.seq2seq.config`` must import without torch.
__getattr__ = lazy_exports(
    __name__,
    {
        "DecodeConfig": "rnnkit.tasks.seq2seq.config",
        "Seq2Seq": "rnnkit.tasks.seq2seq.model",
        "Seq2SeqConfig": "rnnkit.tasks.seq2seq.config",
        "Seq2SeqDataConfig": "rnnkit.tasks.seq2seq.config",
        "Seq2SeqRun": "rnnkit.tasks.seq2seq.api",
        "Seq2SeqSettings": "rnnkit.tasks.seq2seq.config",
        "Translator": "rnnkit.tasks.seq2seq.api",
        "configure": "rnnkit.tasks.seq2seq.api",
        "defaults": "rnnkit.tasks.seq2seq.config",
        "evaluate_file": "rnnkit.tasks.seq2seq.api",
        "load": "rnnkit.tasks.seq2seq.api",
        "train": "rnnkit.tasks.seq2seq.api",
        "translate": "rnnkit.tasks.seq2seq.api",
    },
)
