"""Our layers against torch.nn.RNN/GRU/LSTM over the whole configuration registry:
outputs, final states and the gradients of every parameter, input and state."""

from __future__ import annotations

import pytest
import torch

from helpers import TOLERANCE, assert_rel_close, rnnkit_class, run_with_random_loss, torch_class
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


def _leaves(x, hx):
    x = x.clone().requires_grad_()
    if hx is None:
        return x, None
    if isinstance(hx, tuple):
        return x, tuple(s.clone().requires_grad_() for s in hx)
    return x, hx.clone().requires_grad_()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_layer_matches_torch_nn(config: LayerConfig):
    torch.manual_seed(0)
    theirs = torch_class(config.cell)(D, 6, **config.layer_kwargs())
    ours = rnnkit_class(config.cell)(D, 6, **config.layer_kwargs())
    ours.load_state_dict(theirs.state_dict())
    x, lengths, hx = _inputs(config)
    x_theirs, hx_theirs = _leaves(x, hx)
    x_ours, hx_ours = _leaves(x, hx)
    out_theirs, finals_theirs = run_with_random_loss(
        theirs, config, x_theirs, lengths, hx_theirs, pack_padded=True
    )
    out_ours, finals_ours = run_with_random_loss(ours, config, x_ours, lengths, hx_ours)

    rtol = TOLERANCE[config.dtype]
    assert_rel_close(out_ours, out_theirs, rtol, "output")
    for mine, ref in zip(finals_ours, finals_theirs, strict=True):
        assert_rel_close(mine, ref, rtol, "final state")
    assert_rel_close(x_ours.grad, x_theirs.grad, rtol, "d input")
    if hx is not None:
        pairs = zip(
            *(s if isinstance(s, tuple) else (s,) for s in (hx_ours, hx_theirs)), strict=True
        )
        for mine, ref in pairs:
            assert_rel_close(mine.grad, ref.grad, rtol, "d initial state")
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_rel_close(p.grad, theirs_params[name].grad, rtol, f"d {name}")
