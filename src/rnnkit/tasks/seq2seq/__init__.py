"""Sequence to sequence with attention: a bidirectional encoder, a decoder with additive or
multiplicative attention, greedy and beam search; exact match, BLEU and chrF."""

from rnnkit.tasks.seq2seq.api import (
    Seq2SeqDataConfig,
    Seq2SeqRun,
    Translator,
    configure,
    defaults,
    load,
    train,
    translate,
)
from rnnkit.tasks.seq2seq.model import Seq2Seq, Seq2SeqConfig

__all__ = [
    "Seq2Seq",
    "Seq2SeqConfig",
    "Seq2SeqDataConfig",
    "Seq2SeqRun",
    "Translator",
    "configure",
    "defaults",
    "load",
    "train",
    "translate",
]
