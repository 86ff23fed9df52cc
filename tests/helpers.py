"""Assertions and builders shared by the tests."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

import rnnkit
from error_model import fp32_truth_and_bounds

TOLERANCE = {torch.float64: 1e-10}
"""float64 comparisons: rounding is ~1e-16, so 1e-10 leaves room for any order of summation
and still fails any real difference. fp32 comparisons use the error model instead
(``assert_fp32_close``, tests/error_model.py)."""


def relative_error(actual, expected) -> float:
    """max |actual - expected| / max(|expected|, tiny): the infinity-norm relative error."""
    a = torch.as_tensor(np.asarray(actual) if not torch.is_tensor(actual) else actual).double()
    e = torch.as_tensor(
        np.asarray(expected) if not torch.is_tensor(expected) else expected
    ).double()
    assert a.shape == e.shape, f"shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    scale = max(e.abs().max().item(), 1e-30) if e.numel() else 1.0
    return (a - e).abs().max().item() / scale if e.numel() else 0.0


def _module_name() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[0].rsplit("/", 1)[-1]


OBSERVED: dict[tuple[str, str], tuple[float, int]] = {}
"""(test module, kind) -> (largest error seen, comparisons), for the summary: the relative
error against a fixed tolerance, or the fraction of the fp32 error model's bound used."""


def merge_observed(key: tuple[str, str], worst: float, count: int) -> None:
    old_worst, old_count = OBSERVED.get(key, (0.0, 0))
    OBSERVED[key] = (max(old_worst, worst), old_count + count)


def _observe(kind: str, value: float) -> None:
    merge_observed((_module_name(), kind), value, 1)


def assert_rel_close(actual, expected, rtol: float, what: str = "") -> None:
    err = relative_error(actual, expected)
    _observe(f"tolerance {rtol:.0e}", err)
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.0e}"


def assert_fp32_close(actual, truth: Tensor, bound: float, what: str = "") -> None:
    """``actual`` (fp32) is within the error model's ``bound`` of the exact ``truth``
    (error_model.fp32_truth_and_bounds gives both)."""
    a, e = torch.as_tensor(actual).detach().double(), torch.as_tensor(truth).double()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    err = (a - e).abs().max().item() if e.numel() else 0.0
    _observe("fp32 error model (error / bound)", err / bound)
    scale = e.abs().max().item() if e.numel() else 0.0
    assert err <= bound, (
        f"{what}: |error| {err:.3e} > {bound:.3e}, the most a correct fp32 computation "
        f"may err here (relative to max |truth| {scale:.3e}: {err / max(scale, 1e-300):.2e})"
    )


def assert_fp32_pair_close(a, b, bound: float, what: str = "") -> None:
    """Two fp32 computations of one problem, each within ``bound`` of the truth, differ by
    at most twice that."""
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    err = (a - b).abs().max().item() if a.numel() else 0.0
    _observe("fp32 error model (error / bound)", err / (2 * bound))
    assert err <= 2 * bound, f"{what}: |difference| {err:.3e} > 2 x {bound:.3e}"


def fp32_layer_truth(module: torch.nn.Module, run: Callable[[torch.nn.Module], list[Tensor]]):
    """The exact values and the fp32 error bounds of ``run(module)``, from a float64 copy of
    ``module`` on the composite path (``run`` must build its inputs in the module's dtype
    from fp32 values, so that they are the very fp32 inputs)."""
    module64 = copy.deepcopy(module).double()
    with rnnkit.use_backend("composite"):
        return fp32_truth_and_bounds(lambda: run(module64))


def random_loss_weights(shape, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
    """Weights of a random linear loss, drawn in float64 and rounded to fp32, so fp32 and
    float64 runs see the very same loss."""
    return torch.randn(shape, generator=generator, dtype=torch.float64).float().to(dtype)


def rnnkit_class(cell: str):
    return {
        "rnn_tanh": rnnkit.RNN,
        "rnn_relu": rnnkit.RNN,
        "gru": rnnkit.GRU,
        "gru_reset_before": lambda *a, **k: rnnkit.GRU(*a, reset_after=False, **k),
        "lstm": rnnkit.LSTM,
        "mingru": rnnkit.MinGRU,
        "minlstm": rnnkit.MinLSTM,
        "lstm_ln": lambda *a, **k: rnnkit.LSTM(*a, layer_norm=True, **k),
        "gru_ln": lambda *a, **k: rnnkit.GRU(*a, layer_norm=True, **k),
    }[cell]


def torch_class(cell: str):
    return {
        "rnn_tanh": torch.nn.RNN,
        "rnn_relu": torch.nn.RNN,
        "gru": torch.nn.GRU,
        "lstm": torch.nn.LSTM,
    }[cell]


def run_in_length_mode(module, config, x, lengths, hx, pack_padded: bool = False):
    """Run a layer in ``config``'s length mode -> (output padded to T, final states as a
    tuple). ``pack_padded`` feeds a "padded" config as a PackedSequence (for torch.nn,
    which has no ``lengths=``)."""
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
    return out, (final if isinstance(final, tuple) else (final,))


def outputs_and_grads(module, config, x, lengths, hx, pack_padded: bool = False) -> list[Tensor]:
    """Run a layer in ``config``'s length mode (``run_in_length_mode``) on leaves ``x`` and
    ``hx`` (None, a tensor or a tuple), and return its output (padded to T), final states,
    then the gradients of a random linear loss of both with respect to x, the initial
    states and every parameter."""
    out, finals = run_in_length_mode(module, config, x, lengths, hx, pack_padded)
    g = torch.Generator().manual_seed(2)
    loss = (out * random_loss_weights(out.shape, g, out.dtype)).sum()
    for f in finals:
        loss = loss + (f * random_loss_weights(f.shape, g, f.dtype)).sum()
    states = [] if hx is None else list(hx) if isinstance(hx, tuple) else [hx]
    leaves = [x, *states, *module.parameters()]
    grads = torch.autograd.grad(loss, leaves)
    return [out.detach(), *(f.detach() for f in finals), *grads]
