"""Our layers against torch.nn.RNN/GRU/LSTM over the whole configuration registry:
outputs, final states and the gradients of every parameter, input and state."""

from __future__ import annotations

import pytest
import torch

from helpers import (
    TOLERANCE,
    assert_fp32_pair_close,
    assert_rel_close,
    fp32_layer_truth,
    outputs_and_grads,
    rnnkit_class,
    torch_class,
)
from registry import TORCH_CELLS, B, D, LayerConfig, T, layer_configs, sample_lengths

CONFIGS = layer_configs(cells=TORCH_CELLS)


def _inputs(config: LayerConfig):
    g = torch.Generator().manual_seed(1)
    shape = (B, T, D) if config.batch_first else (T, B, D)
    x = torch.randn(shape, generator=g, dtype=config.dtype)
    lengths = sample_lengths(g) if config.lengths != "full" else None
    hx = None
    if config.initial_state:
        n = config.num_layers * (2 if config.bidirectional else 1)
        states = [torch.randn(n, B, 6, generator=g, dtype=config.dtype) for _ in range(2)]
        hx = tuple(states) if config.cell == "lstm" else states[0]
    return x, lengths, hx


def _run(module, config: LayerConfig, x, lengths, hx, pack_padded=False):
    dtype = next(module.parameters()).dtype
    x = x.to(dtype, copy=True).requires_grad_()
    if isinstance(hx, tuple):
        hx = tuple(s.to(dtype, copy=True).requires_grad_() for s in hx)
    elif hx is not None:
        hx = hx.to(dtype, copy=True).requires_grad_()
    return outputs_and_grads(module, config, x, lengths, hx, pack_padded)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_layer_matches_torch_nn(config: LayerConfig):
    """Outputs, final states, d input, d initial states and d every parameter (in torch.nn's
    parameter order, which ours shares)."""
    torch.manual_seed(0)
    theirs = torch_class(config.cell)(D, 6, **config.layer_kwargs())
    ours = rnnkit_class(config.cell)(D, 6, **config.layer_kwargs())
    ours.load_state_dict(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    x, lengths, hx = _inputs(config)
    mine = _run(ours, config, x, lengths, hx)
    reference = _run(theirs, config, x, lengths, hx, pack_padded=True)
    if config.dtype == torch.float64:
        for k, (a, e) in enumerate(zip(mine, reference, strict=True)):
            assert_rel_close(a, e, TOLERANCE[torch.float64], f"tensor #{k}")
        return
    # Both are fp32 computations of one problem: each within the error model's bound of
    # the exact result, so within twice that of each other.
    _, bounds = fp32_layer_truth(ours, lambda m: _run(m, config, x, lengths, hx))
    for k, (a, e, bound) in enumerate(zip(mine, reference, bounds, strict=True)):
        assert_fp32_pair_close(a, e, bound, f"tensor #{k} (out, finals, then grads)")
