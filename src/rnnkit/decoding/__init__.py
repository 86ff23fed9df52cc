"""Decoding: sampling from a language model (temperature, top-k, top-p, greedy) and
batched greedy and beam search over any step function."""

from rnnkit.decoding.beam import Hypothesis, decode
from rnnkit.decoding.sampling import SampleConfig, encode_prime, generate, sample

__all__ = ["Hypothesis", "SampleConfig", "decode", "encode_prime", "generate", "sample"]
