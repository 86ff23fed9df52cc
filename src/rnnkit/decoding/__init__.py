"""Decoding: sampling from a language model (temperature, top-k, top-p, greedy) and
batched greedy and beam search over any step function, and Bernoulli sampling of binary
steps (piano rolls). Attributes load on first use, so
``rnnkit.decoding.config`` imports without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.decoding.beam import Hypothesis, decode
    from rnnkit.decoding.bernoulli import sample_bernoulli
    from rnnkit.decoding.config import SampleConfig
    from rnnkit.decoding.sampling import encode_prime, generate, sample

__all__ = [
    "Hypothesis",
    "SampleConfig",
    "decode",
    "encode_prime",
    "generate",
    "sample",
    "sample_bernoulli",
]

__getattr__ = lazy_exports(
    __name__,
    {
        "Hypothesis": "rnnkit.decoding.beam",
        "decode": "rnnkit.decoding.beam",
        "SampleConfig": "rnnkit.decoding.config",
        "encode_prime": "rnnkit.decoding.sampling",
        "generate": "rnnkit.decoding.sampling",
        "sample": "rnnkit.decoding.sampling",
        "sample_bernoulli": "rnnkit.decoding.bernoulli",
    },
)
