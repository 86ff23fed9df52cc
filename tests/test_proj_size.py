"""The LSTM's ``proj_size`` (Sak et al. 2014; torch.nn.LSTM's argument): torch.nn parity
of outputs, final states, every gradient and the state_dict over the registry's option
combinations (on the fused kernel, which ``auto`` picks for it on the CPU; its agreement
with the composite path is in test_kernels.py); the NumPy reference's hand-written BPTT of
the projection against finite differences and against the layer; its bad arguments."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import rnnkit
from helpers import (
    TOLERANCE,
    assert_fp32_pair_close,
    assert_rel_close,
    fp32_layer_truth,
    outputs_and_grads,
)
from registry import B, D, H, LayerConfig, T, layer_configs, sample_lengths
from rnnkit.nn import kernels, reference, runner
from rnnkit.nn.cells import LSTM as LSTM_CELL
from rnnkit.nn.cells import lstm_cell
from rnnkit.nn.factory import recurrent_layer

P = 4  # < H = 6
# torch.nn's own note that oneDNN lacks the projection (it falls back), not ours
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")


def _with_proj(configs: list[LayerConfig]) -> list[LayerConfig]:
    """Every configuration with a projection, P cycling through 1 .. H-1."""
    return [dataclasses.replace(c, proj_size=1 + k % (H - 1)) for k, c in enumerate(configs)]


FP64 = _with_proj(layer_configs(cells=("lstm",), dtypes=(torch.float64,)))
# fp32 under the error model costs five composite runs per case: a seeded sample.
_fp32 = _with_proj(layer_configs(cells=("lstm",), dtypes=(torch.float32,)))
FP32 = [_fp32[k] for k in np.random.default_rng(0).choice(len(_fp32), 24, replace=False)]


def _inputs(config: LayerConfig):
    g = torch.Generator().manual_seed(1)
    shape = (B, T, D) if config.batch_first else (T, B, D)
    x = torch.randn(shape, generator=g, dtype=config.dtype)
    lengths = sample_lengths(g) if config.lengths != "full" else None
    hx = None
    if config.initial_state:
        n = config.num_layers * (2 if config.bidirectional else 1)
        hx = (
            torch.randn(n, B, config.proj_size, generator=g, dtype=config.dtype),
            torch.randn(n, B, H, generator=g, dtype=config.dtype),
        )
    return x, lengths, hx


def _run(module, config: LayerConfig, x, lengths, hx, pack_padded=False):
    dtype = next(module.parameters()).dtype
    x = x.to(dtype, copy=True).requires_grad_()
    if hx is not None:
        hx = tuple(s.to(dtype, copy=True).requires_grad_() for s in hx)
    return outputs_and_grads(module, config, x, lengths, hx, pack_padded)


def _pair(config: LayerConfig):
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(D, H, **config.layer_kwargs())
    ours = rnnkit.LSTM(D, H, **config.layer_kwargs())
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


@pytest.mark.parametrize("config", FP64, ids=lambda c: c.id)
def test_matches_torch_nn_float64(config: LayerConfig):
    """Output, h_n [.., P], c_n [.., H], d input, d states, d every parameter (weight_hr
    included, in torch.nn's order), relative 1e-10."""
    ours, theirs = _pair(config)
    assert [(n, p.shape) for n, p in ours.named_parameters()] == [
        (n, p.shape) for n, p in theirs.named_parameters()
    ]
    x, lengths, hx = _inputs(config)
    mine = _run(ours, config, x, lengths, hx)
    expected = _run(theirs, config, x, lengths, hx, pack_padded=True)
    dirs = 2 if config.bidirectional else 1
    assert mine[0].shape[-1] == dirs * config.proj_size
    assert mine[1].shape[-1] == config.proj_size and mine[2].shape[-1] == H
    for k, (a, e) in enumerate(zip(mine, expected, strict=True)):
        assert_rel_close(a, e, TOLERANCE[torch.float64], f"tensor #{k} (out, finals, grads)")


@pytest.mark.parametrize("config", FP32, ids=lambda c: c.id)
def test_matches_torch_nn_float32(config: LayerConfig):
    """Both fp32 computations of one problem lie within the error model's bound of the
    exact result, so within twice that of each other."""
    ours, theirs = _pair(config)
    x, lengths, hx = _inputs(config)
    mine = _run(ours, config, x, lengths, hx)
    expected = _run(theirs, config, x, lengths, hx, pack_padded=True)
    _, bounds = fp32_layer_truth(ours, lambda m: _run(m, config, x, lengths, hx))
    for k, (a, e, bound) in enumerate(zip(mine, expected, bounds, strict=True)):
        assert_fp32_pair_close(a, e, bound, f"tensor #{k} (out, finals, then grads)")


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_loads_both_ways(bias: bool):
    kwargs = {"num_layers": 2, "bidirectional": True, "bias": bias, "proj_size": 3}
    theirs = torch.nn.LSTM(D, H, **kwargs)
    ours = rnnkit.LSTM(D, H, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours._flat_weights_names == theirs._flat_weights_names
    assert [[w.shape for w in ws] for ws in ours.all_weights] == [
        [w.shape for w in ws] for ws in theirs.all_weights
    ]
    assert ours.weight_hr_l1_reverse.shape == (3, H) and ours.weight_ih_l1.shape == (4 * H, 6)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(T, B, D)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])
    for p in ours.parameters():
        torch.nn.init.normal_(p)
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(theirs(x)[0], ours(x)[0])
    with pytest.raises(RuntimeError, match="weight_hr_l0"):
        rnnkit.LSTM(D, H, **{**kwargs, "proj_size": 0}).load_state_dict(theirs.state_dict())


def test_unbatched_and_streaming_match_torch_nn():
    """[T, D] input with [n, P]/[n, H] states, and the T = 1 no-grad streaming call (the
    fast path's step for it is the cell's composite one)."""
    torch.manual_seed(3)
    theirs = torch.nn.LSTM(D, H, 2, proj_size=2, dtype=torch.float64)
    ours = rnnkit.LSTM(D, H, 2, proj_size=2, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(T, D, dtype=torch.float64)
    hx = (torch.randn(2, 2, dtype=torch.float64), torch.randn(2, H, dtype=torch.float64))
    for a, e in zip(ours(x, hx), theirs(x, hx), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    step = torch.randn(1, B, D, dtype=torch.float64)
    hx = (torch.randn(2, B, 2, dtype=torch.float64), torch.randn(2, B, H, dtype=torch.float64))
    with torch.no_grad():
        (y, (h, c)), (ye, (he, ce)) = ours(step, hx), theirs(step, hx)
    for a, e in ((y, ye), (h, he), (c, ce)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_the_fused_kernel_is_selected_on_the_cpu():
    """``kernels.select`` picks the fused kernel for a projected LSTM under "auto" on CPU
    fp32/fp64 input, as for the plain LSTM; the composite runner on other dtypes and where
    forced."""
    x = torch.randn(T, B, D)
    if not kernels.fused.supports(LSTM_CELL, x):
        pytest.skip("the fused extension did not build here")
    for dtype in (torch.float32, torch.float64):
        assert kernels.select(lstm_cell(2), x.to(dtype)) is kernels.fused.run_layer
    with rnnkit.use_backend("fused"):
        assert kernels.select(lstm_cell(2), x, noise=True) is kernels.fused.run_layer
    assert kernels.select(lstm_cell(2), x.half()) is runner.run_layer
    with rnnkit.use_backend("composite"):
        assert kernels.select(lstm_cell(2), x) is runner.run_layer


def test_diagnostics_unroll_equals_the_layer():
    from rnnkit.diagnostics import unroll

    torch.manual_seed(4)
    layer = rnnkit.LSTM(D, H, 2, bidirectional=True, proj_size=3, dtype=torch.float64)
    x = torch.randn(T, B, D, dtype=torch.float64)
    out, (h, c) = layer(x)
    run = unroll(layer, x)
    torch.testing.assert_close(run.output, out, rtol=1e-12, atol=1e-12)
    h_u, c_u = run.final()
    torch.testing.assert_close(h_u, h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_u, c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("value", [-1, H, H + 2, 1.5, True, "2"])
def test_bad_proj_size_is_one_clear_error(value):
    with pytest.raises(ValueError, match=r"proj_size must be .*got"):
        rnnkit.LSTM(D, H, proj_size=value)


def test_factory_builds_it_for_the_lstm_only():
    layer = recurrent_layer("lstm", D, H, 2, proj_size=P)
    assert layer.output_size == P and layer.weight_hh_l1.shape == (4 * H, P)
    with pytest.raises(ValueError, match="proj_size needs the lstm cell, got cell 'gru'"):
        recurrent_layer("gru", D, H, proj_size=P)


# --- the NumPy reference -------------------------------------------------------------

EPS = 1e-6


def _reference_problem(seed: int, bias: bool):
    rng = np.random.default_rng(seed)
    params = reference.Params(
        w_ih=rng.normal(0, 0.6, (4 * H, D)),
        w_hh=rng.normal(0, 0.6, (4 * H, P)),
        b_ih=rng.normal(0, 0.3, 4 * H) if bias else None,
        b_hh=rng.normal(0, 0.3, 4 * H) if bias else None,
        w_hr=rng.normal(0, 0.6, (P, H)),
    )
    x = rng.normal(size=(T, B, D))
    state0 = (rng.normal(size=(B, P)), rng.normal(size=(B, H)))
    dys = rng.normal(size=(T, B, P))
    dfinal = (rng.normal(size=(B, P)), rng.normal(size=(B, H)))
    return params, x, state0, dys, dfinal


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_reference_backward_matches_finite_differences(bias: bool):
    forward, backward = reference.for_cell(lstm_cell(P))
    params, x, state0, dys, dfinal = _reference_problem(seed=5, bias=bias)
    _, _, cache = forward(x, state0, params)
    grads = backward(cache, dys, dfinal)

    def loss() -> float:
        ys, final, _ = forward(x, state0, params)
        states = sum((f * d).sum() for f, d in zip(final, dfinal, strict=True))
        return float((ys * dys).sum() + states)

    checks = {"x": (x, grads.x), "w_ih": (params.w_ih, grads.w_ih)}
    checks |= {"w_hh": (params.w_hh, grads.w_hh), "w_hr": (params.w_hr, grads.w_hr)}
    checks |= {"h0": (state0[0], grads.state0[0]), "c0": (state0[1], grads.state0[1])}
    if bias:
        checks |= {"b_ih": (params.b_ih, grads.b_ih), "b_hh": (params.b_hh, grads.b_hh)}
    for what, (array, analytic) in checks.items():
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + EPS
            up = loss()
            array[index] = saved - EPS
            numeric[index] = (up - loss()) / (2 * EPS)
            array[index] = saved
        assert analytic.shape == array.shape, what
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=what)


def test_reference_matches_the_layer():
    """One layer-direction: the reference's outputs and gradients equal the composite
    layer's under autograd (float64)."""
    params, x, state0, dys, dfinal = _reference_problem(seed=6, bias=True)
    forward, backward = reference.for_cell(lstm_cell(P))
    ys, final, cache = forward(x, state0, params)
    grads = backward(cache, dys, dfinal)
    layer = rnnkit.LSTM(D, H, proj_size=P, dtype=torch.float64)
    with torch.no_grad():
        for name in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr"):
            kind = name.replace("w_", "weight_").replace("b_", "bias_")
            getattr(layer, kind + "_l0").copy_(torch.from_numpy(getattr(params, name)))
    xt = torch.from_numpy(x).requires_grad_()
    hx = tuple(torch.from_numpy(s[None]).requires_grad_() for s in state0)
    out, (h, c) = layer(xt, hx)
    loss = (out * torch.from_numpy(dys)).sum()
    loss = loss + (h[0] * torch.from_numpy(dfinal[0])).sum()
    loss = loss + (c[0] * torch.from_numpy(dfinal[1])).sum()
    loss.backward()
    assert_rel_close(out.detach(), ys, 1e-12, "output")
    assert_rel_close(h[0].detach(), final[0], 1e-12, "h_n")
    assert_rel_close(c[0].detach(), final[1], 1e-12, "c_n")
    assert_rel_close(xt.grad, grads.x, 1e-10, "d x")
    assert_rel_close(hx[0].grad[0], grads.state0[0], 1e-10, "d h0")
    assert_rel_close(hx[1].grad[0], grads.state0[1], 1e-10, "d c0")
    assert_rel_close(layer.weight_hr_l0.grad, grads.w_hr, 1e-10, "d weight_hr")
    assert_rel_close(layer.weight_hh_l0.grad, grads.w_hh, 1e-10, "d weight_hh")
    assert_rel_close(layer.weight_ih_l0.grad, grads.w_ih, 1e-10, "d weight_ih")
    assert_rel_close(layer.bias_ih_l0.grad, grads.b_ih, 1e-10, "d bias_ih")
