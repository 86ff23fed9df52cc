"""Assertions and builders shared by the tests."""

from __future__ import annotations

import os

import numpy as np
import torch

import rnnkit

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max(|expected|, tiny): the infinity-norm relative error."""
    a = torch.as_tensor(np.asarray(actual) if not torch.is_tensor(actual) else actual).double()
    e = torch.as_tensor(
        np.asarray(expected) if not torch.is_tensor(expected) else expected
    ).double()
    assert a.shape == e.shape, f"shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    scale = max(e.abs().max().item(), 1e-30) if e.numel() else 1.0
    return (a - e).abs().max().item() / scale if e.numel() else 0.0


OBSERVED: dict[tuple[str, float], tuple[float, int]] = {}
"""(test module, tolerance) -> (largest relative error seen, comparisons), for the summary."""


def assert_rel_close(actual, expected, rtol: float, what: str = "") -> None:
    err = relative_error(actual, expected)
    module = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[0].rsplit("/", 1)[-1]
    worst, count = OBSERVED.get((module, rtol), (0.0, 0))
    OBSERVED[(module, rtol)] = (max(worst, err), count + 1)
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.0e}"


def rnnkit_class(cell: str):
    return {
        "rnn_tanh": rnnkit.RNN,
        "rnn_relu": rnnkit.RNN,
        "gru": rnnkit.GRU,
        "gru_reset_before": lambda *a, **k: rnnkit.GRU(*a, reset_after=False, **k),
        "lstm": rnnkit.LSTM,
    }[cell]


def torch_class(cell: str):
    return {
        "rnn_tanh": torch.nn.RNN,
        "rnn_relu": torch.nn.RNN,
        "gru": torch.nn.GRU,
        "lstm": torch.nn.LSTM,
    }[cell]


def run_with_random_loss(module, config, x, lengths, hx, pack_padded: bool = False):
    """Run a layer in ``config``'s length mode, backpropagate a random linear loss of its
    outputs and final states, and return (output padded to T, final states).

    ``pack_padded`` feeds a "padded" config as a PackedSequence (for torch.nn, which has
    no ``lengths=``).
    """
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

    from registry import T

    bf = config.batch_first
    if config.lengths == "packed" or (config.lengths == "padded" and pack_padded):
        packed = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=False)
        out, final = module(packed, hx)
        assert isinstance(out, PackedSequence)
        out, _ = pad_packed_sequence(out, batch_first=bf, total_length=T)
    elif config.lengths == "padded":
        out, final = module(x, hx, lengths=lengths)
    else:
        out, final = module(x, hx)
    finals = final if isinstance(final, tuple) else (final,)
    g = torch.Generator().manual_seed(2)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for f in finals:
        loss = loss + (f * torch.randn(f.shape, generator=g, dtype=f.dtype)).sum()
    loss.backward()
    return out, finals
