"""Decoding: sampling from a language model (temperature, top-k, top-p, greedy),
batched greedy and beam search over any step function, and Bernoulli sampling of binary
steps (piano rolls)."""

from rnnkit.decoding.beam import Hypothesis, decode
from rnnkit.decoding.bernoulli import sample_bernoulli
from rnnkit.decoding.sampling import SampleConfig, encode_prime, generate, sample

__all__ = [
    "Hypothesis",
    "SampleConfig",
    "decode",
    "encode_prime",
    "generate",
    "sample",
    "sample_bernoulli",
]
