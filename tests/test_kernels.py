"""The fused CPU kernels against the NumPy reference and the composite path: outputs,
final states and every gradient, over the configuration registry, random shapes and
degenerate ones, in training and in inference, for every cell of ``KERNEL_CELLS`` (the
projected LSTM, ``proj_size``, as "lstm_proj")."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnkit
from error_model import float64_leaves, fp32_truth_and_bounds
from helpers import (
    TOLERANCE,
    assert_fp32_close,
    assert_rel_close,
    fp32_layer_truth,
    outputs_and_grads,
    random_loss_weights,
    rnnkit_class,
)
from registry import KERNEL_CELLS, B, D, H, LayerConfig, T, layer_configs, sample_lengths
from rnnkit.nn import kernels, reference, runner
from rnnkit.nn.cells import CELLS, lstm_cell
from rnnkit.nn.kernels import fused

pytestmark = pytest.mark.skipif(fused.load() is None, reason="the fused extension did not build")


# ---- one layer through run_layer: fused vs composite vs reference ---------------------


def _layer_problem(cell_name, T, B, D, H, dirs, dtype, lengths, bias=True, seed=0, proj=None):
    """Leaf tensors for one layer: x, states per direction, weights per direction (with
    W_hr [P, H] fifth for "lstm_proj", whose h is P = ``proj`` or H // 2 wide)."""
    g = torch.Generator().manual_seed(seed)
    P = (proj or max(1, H // 2)) if cell_name == "lstm_proj" else 0
    cell = lstm_cell(P) if P else CELLS[cell_name]
    G, R = cell.num_gates * H, P or H

    def leaf(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, dtype=dtype)).requires_grad_()

    # Weights at torch.nn's init scale (~1/sqrt(H)), so gates are not all saturated: a
    # saturated fp32 tanh has no accurate derivative in any implementation.
    w = 1.0 / H**0.5
    x = leaf(T, B, D)
    states = [tuple(leaf(B, n) for n in cell.state_sizes(H)) for _ in range(dirs)]
    recurrent = cell.recurrent  # minGRU/minLSTM: no W_hh, b_hh
    weights = [
        (
            leaf(G, D, scale=w),
            leaf(G, R, scale=1.0 / R**0.5) if recurrent else None,
            leaf(G, scale=w) if bias else None,
            leaf(G, scale=w) if bias and recurrent else None,
            *((leaf(P, H, scale=w),) if P else ()),
        )
        for _ in range(dirs)
    ]
    lengths = None if lengths is None else torch.as_tensor(lengths, dtype=torch.int64)
    return cell, x, lengths, states, weights


def _run_with_grads(run_layer, cell, x, lengths, states, weights, seed=1):
    """Outputs, finals and d(loss)/d(every leaf) of a random linear loss."""
    out, finals = run_layer(cell, x, lengths, states, weights)
    g = torch.Generator().manual_seed(seed)
    loss = (out * random_loss_weights(out.shape, g, out.dtype)).sum()
    for final in finals:
        for s in final:
            loss = loss + (s * random_loss_weights(s.shape, g, s.dtype)).sum()
    leaves = [x] + [s for st_ in states for s in st_]
    leaves += [w for ws in weights for w in ws if w is not None]
    grads = torch.autograd.grad(loss, leaves)
    return [out, *(s for f in finals for s in f), *grads]


def _assert_fused_matches_composite(cell, x, lengths, states, weights):
    """fp64: fused against composite within 1e-10. fp32: the fused kernel and the composite
    path each within the fp32 error model's bound of the exact result (tests/error_model.py);
    the composite path passing checks that the model admits a correct implementation."""
    actual = _run_with_grads(fused.run_layer, cell, x, lengths, states, weights)
    if x.dtype == torch.float64:
        expected = _run_with_grads(runner.run_layer, cell, x, lengths, states, weights)
        for k, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_rel_close(a, e, TOLERANCE[torch.float64], f"{cell.name} tensor #{k}")
        return
    composite = _run_with_grads(runner.run_layer, cell, x, lengths, states, weights)
    x64, states64, weights64 = float64_leaves((x, states, weights))
    truth, bounds = fp32_truth_and_bounds(
        lambda: _run_with_grads(runner.run_layer, cell, x64, lengths, states64, weights64)
    )
    for k, (a, c, e, bound) in enumerate(zip(actual, composite, truth, bounds, strict=True)):
        what = f"{cell.name} tensor #{k} (out, finals, then grads)"
        assert_fp32_close(a, e, bound, f"fused {what}")
        assert_fp32_close(c, e, bound, f"composite {what}")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell_name", KERNEL_CELLS)
def test_fused_direction_matches_reference(cell_name, reverse):
    """One direction against the hand-written NumPy BPTT (float64, full lengths)."""
    cell, x, _, states, weights = _layer_problem(cell_name, 7, 3, 5, 4, 2, torch.float64, None)
    d, R = (1 if reverse else 0), states[0][0].shape[-1]  # R: h's width (P if projected)
    # A two-direction layer whose other direction gets no gradient isolates direction d.
    out, finals = fused.run_layer(cell, x, None, states, weights)
    g = torch.Generator().manual_seed(5)
    dys = torch.randn(7, 3, R, generator=g, dtype=torch.float64)
    dfinal = [torch.randn(s.shape, generator=g, dtype=torch.float64) for s in finals[d]]
    loss = (out[..., d * R : (d + 1) * R] * dys).sum()
    loss = loss + sum((s * ds).sum() for s, ds in zip(finals[d], dfinal, strict=True))
    kinds = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")[: len(weights[d])]
    params = dict(zip(kinds, weights[d], strict=True))
    present = {name: p for name, p in params.items() if p is not None}  # minimal: no w_hh, b_hh
    grads = torch.autograd.grad(loss, [x, *states[d], *present.values()])

    forward, backward = reference.for_cell(cell)
    flip = (lambda a: a[::-1].copy()) if reverse else (lambda a: a)
    state0 = tuple(s.detach().numpy() for s in states[d])
    arrays = {name: None if p is None else p.detach().numpy() for name, p in params.items()}
    ys, final, cache = forward(flip(x.detach().numpy()), state0, reference.Params(**arrays))
    ref = backward(cache, flip(dys.numpy()), tuple(t.numpy() for t in dfinal))

    tol = TOLERANCE[torch.float64]
    assert_rel_close(out[..., d * R : (d + 1) * R].detach(), flip(ys), tol, "output")
    for s, r in zip(finals[d], final, strict=True):
        assert_rel_close(s.detach(), r, tol, "final state")
    expected = [flip(ref.x), *ref.state0, *(getattr(ref, name) for name in present)]
    names = ["x", *(f"state0[{k}]" for k in range(len(ref.state0))), *present]
    for name, a, e in zip(names, grads, expected, strict=True):
        assert_rel_close(a, np.asarray(e), tol, f"d {name}")


# ---- the whole configuration registry, through the layers ------------------------------

# Two layers cover one: the first layer of the stack sees x, the second its output, and the
# gradient crosses both. Every other axis of the registry is kept.
CONFIGS = layer_configs(num_layers=(2,))
CONFIGS += [dataclasses.replace(c, proj_size=2) for c in CONFIGS if c.cell == "lstm"]


def _registry_problem(config: LayerConfig):
    """x [T, B, D] or [B, T, D], lengths and two initial-state stacks for one config."""
    g = torch.Generator().manual_seed(1)
    shape = (B, T, D) if config.batch_first else (T, B, D)
    x = torch.randn(shape, generator=g, dtype=config.dtype)
    lengths = sample_lengths(g) if config.lengths != "full" else None
    n = config.num_layers * (2 if config.bidirectional else 1)
    h0 = [torch.randn(n, B, H, generator=g, dtype=config.dtype) for _ in range(2)]
    return x, lengths, h0


def _registry_run(module, config: LayerConfig, x0, lengths, h0) -> list[torch.Tensor]:
    """Outputs, finals and every gradient of ``module`` (in its dtype) on fresh leaves."""
    dtype = next(module.parameters()).dtype
    x = x0.to(dtype, copy=True).requires_grad_()
    hx = None
    if config.initial_state:
        hs = [h.to(dtype, copy=True).requires_grad_() for h in h0[: CELLS[config.cell].num_states]]
        if config.proj_size:  # h is P wide
            hs[0] = hs[0].detach()[..., : config.proj_size].clone().requires_grad_()
        hx = tuple(hs) if config.cell == "lstm" else hs[0]
    return outputs_and_grads(module, config, x, lengths, hx)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.id)
def test_layer_fused_matches_composite(config: LayerConfig):
    x0, lengths, h0 = _registry_problem(config)
    torch.manual_seed(0)
    module = rnnkit_class(config.cell)(D, H, **config.layer_kwargs())
    results = {}
    for backend in ("composite", "fused"):
        with rnnkit.use_backend(backend):
            results[backend] = _registry_run(module, config, x0, lengths, h0)
    if config.dtype == torch.float64:
        for k, (a, e) in enumerate(zip(results["fused"], results["composite"], strict=True)):
            assert_rel_close(a, e, TOLERANCE[torch.float64], f"tensor #{k}")
        return
    truth, bounds = fp32_layer_truth(module, lambda m: _registry_run(m, config, x0, lengths, h0))
    for backend, tensors in results.items():
        for k, (a, e, bound) in enumerate(zip(tensors, truth, bounds, strict=True)):
            assert_fp32_close(a, e, bound, f"{backend} tensor #{k}")


def test_fused_is_the_default_on_cpu():
    x = torch.randn(2, 1, 3)
    for dtype in (torch.float32, torch.float64):
        assert kernels.select(CELLS["gru"], x.to(dtype)) is fused.run_layer
    assert kernels.select(CELLS["gru"], x.half()) is runner.run_layer
    with rnnkit.use_backend("composite"):
        assert kernels.select(CELLS["gru"], x) is runner.run_layer


# ---- random and degenerate shapes ------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cell_name=st.sampled_from(KERNEL_CELLS),
    T=st.integers(1, 9),
    B=st.integers(1, 5),
    D=st.integers(1, 7),
    H=st.integers(1, 9),
    dirs=st.integers(1, 2),
    bias=st.booleans(),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    data=st.data(),
)
def test_random_shapes(cell_name, T, B, D, H, dirs, bias, dtype, data):
    lengths = data.draw(st.none() | st.lists(st.integers(0, T), min_size=B, max_size=B))
    proj = data.draw(st.integers(1, max(1, H - 1))) if cell_name == "lstm_proj" else None
    if cell_name == "lstm_proj" and H == 1:  # P < H: no projection of one unit
        cell_name = "lstm"
    problem = _layer_problem(cell_name, T, B, D, H, dirs, dtype, lengths, bias, proj=proj)
    _assert_fused_matches_composite(*problem)


DEGENERATE = [
    ((1, 1, 1, 1), None),  # T = B = D = H = 1
    ((1, 3, 2, 4), [1, 0, 1]),  # one step, a zero length in the middle
    ((6, 4, 3, 1), [6, 0, 2, 0]),  # H = 1, zero lengths in the middle and at the end
    ((5, 3, 2, 3), [0, 0, 0]),  # every sequence empty: states pass through
    ((4, 1, 3, 5), [2]),  # B = 1, shorter than T
    ((3, 2, 2, 2), [3, 1]),  # the projected LSTM's smallest: P = 1 < H = 2
]


@pytest.mark.parametrize(
    "cell_name, shape, lengths",
    [
        (cell, shape, lengths)
        for cell in KERNEL_CELLS
        for shape, lengths in DEGENERATE
        if cell != "lstm_proj" or shape[3] > 1  # P < H: one unit has no projection
    ],
)
def test_degenerate_shapes(cell_name, shape, lengths):
    for dtype in (torch.float64, torch.float32):
        problem = _layer_problem(cell_name, *shape, 2, dtype, lengths)
        _assert_fused_matches_composite(*problem)


def test_zero_length_sequence_keeps_its_state_and_emits_zeros():
    cell, x, lengths, states, weights = _layer_problem(
        "lstm", 4, 3, 2, 5, 2, torch.float64, [4, 0, 2]
    )
    out, finals = fused.run_layer(cell, x, lengths, states, weights)
    assert out[:, 1].abs().max().item() == 0.0
    assert out[2:, 2].abs().max().item() == 0.0
    for final, initial in zip(finals, states, strict=True):
        for s, s0 in zip(final, initial, strict=True):
            assert torch.equal(s[1], s0[1])


# ---- inference ----------------------------------------------------------------------------


@pytest.mark.parametrize("cell_name", KERNEL_CELLS)
def test_inference_matches_training_and_builds_no_graph(cell_name):
    for dtype in (torch.float32, torch.float64):
        problem = _layer_problem(cell_name, 6, 4, 3, 5, 2, dtype, [6, 2, 0, 5])
        cell, x, lengths, states, weights = problem
        out, finals = fused.run_layer(*problem)
        with torch.no_grad():
            out_ng, finals_ng = fused.run_layer(*problem)
        assert out_ng.grad_fn is None and not out_ng.requires_grad
        # Inference keeps two state slots instead of T+1; the arithmetic is the same.
        assert torch.equal(out_ng, out.detach())
        for f, f_ng in zip(finals, finals_ng, strict=True):
            for s, s_ng in zip(f, f_ng, strict=True):
                assert torch.equal(s_ng, s.detach())
        if dtype == torch.float64:
            with torch.no_grad():
                out_c, _ = runner.run_layer(cell, x, lengths, states, weights)
            assert_rel_close(out_ng, out_c, TOLERANCE[dtype], "inference output")
        else:
            x64, states64, weights64 = float64_leaves((x, states, weights))
            problem64 = (cell, x64, lengths, states64, weights64)
            with torch.no_grad():
                (truth,), (bound,) = fp32_truth_and_bounds(
                    lambda p=problem64: runner.run_layer(*p)[:1]
                )
            assert_fp32_close(out_ng, truth, bound, "inference output")


def test_inputs_without_grad_in_grad_mode():
    """Weights that need gradients but an input that does not: dx is skipped."""
    cell, x, lengths, states, weights = _layer_problem("gru", 5, 2, 3, 4, 1, torch.float64, None)
    x = x.detach()
    out, _ = fused.run_layer(cell, x, lengths, states, weights)
    (gw,) = torch.autograd.grad(out.sum(), [weights[0][0]])
    with rnnkit.use_backend("composite"):
        out_c, _ = runner.run_layer(cell, x, lengths, states, weights)
    (gw_c,) = torch.autograd.grad(out_c.sum(), [weights[0][0]])
    assert_rel_close(gw, gw_c, 1e-10, "d w_ih")


# ---- streaming: the single-step fast path --------------------------------------------


def _stream(layer, xs, hx, fast=True):
    """Feed xs [T, B, D] one step at a time; fast=False takes the general path (lengths=
    of all ones, which the fast path does not accept)."""
    outs = []
    with torch.no_grad():
        for t in range(xs.shape[0]):
            x = xs[t : t + 1].transpose(0, 1) if layer.batch_first else xs[t : t + 1]
            lengths = None if fast else torch.ones(xs.shape[1], dtype=torch.int64)
            out, hx = layer(x, hx, lengths=lengths)
            outs.append(out)
    return torch.cat(outs, 1 if layer.batch_first else 0), hx


@pytest.mark.parametrize("cell_name", KERNEL_CELLS)
@pytest.mark.parametrize(
    "num_layers,bias,batch_first,size",
    [(1, True, False, (5, 7)), (3, False, True, (5, 7)), (2, True, False, (37, 70))],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_streaming_steps_match_the_whole_sequence(
    cell_name, num_layers, bias, batch_first, size, dtype, step_calls
):
    """37 and 70 features exercise the step's vector loops and their tails (the projected
    LSTM's step is the cell's composite one: P = H // 2)."""
    g = torch.Generator().manual_seed(num_layers)
    options = {"num_layers": num_layers, "bias": bias, "batch_first": batch_first}
    if cell_name == "rnn_relu":
        options["nonlinearity"] = "relu"
    D_, H_ = size
    P = H_ // 2 if cell_name == "lstm_proj" else 0
    if P:
        options["proj_size"] = P
    layer = rnnkit_class(cell_name.removesuffix("_proj"))(D_, H_, dtype=dtype, **options).eval()
    assert layer.cell.name == cell_name.removesuffix("_proj")
    xs = torch.randn(9, 3, D_, generator=g, dtype=dtype)
    hx = torch.randn(num_layers, 3, P or H_, generator=g, dtype=dtype)
    if layer.cell.name == "lstm":
        hx = (hx, torch.randn(num_layers, 3, H_, generator=g, dtype=dtype))
    fast_out, fast_h = _stream(layer, xs, hx)
    assert len(step_calls) == 9 * num_layers
    slow_out, _ = _stream(layer, xs, hx, fast=False)
    assert len(step_calls) == 9 * num_layers  # lengths= takes the general path
    with torch.no_grad():
        whole_out, whole_h = layer(xs.transpose(0, 1) if batch_first else xs, hx)
    fast_h = fast_h if isinstance(fast_h, tuple) else (fast_h,)
    whole_h = whole_h if isinstance(whole_h, tuple) else (whole_h,)
    for fast, whole in zip(fast_h, whole_h, strict=True):
        assert fast.shape == whole.shape
    if dtype == torch.float64:
        tol = TOLERANCE[dtype]
        assert_rel_close(fast_out, slow_out, tol, "streamed output vs the general path")
        assert_rel_close(fast_out, whole_out, tol, "streamed output vs the whole sequence")
        for fast, whole in zip(fast_h, whole_h, strict=True):
            assert_rel_close(fast, whole, tol, "streamed final state")
        return

    def whole_sequence(m):
        x64 = xs.double().transpose(0, 1) if batch_first else xs.double()
        h64 = tuple(s.double() for s in hx) if isinstance(hx, tuple) else hx.double()
        with torch.no_grad():
            out, h = m(x64, h64)
        return [out, *(h if isinstance(h, tuple) else (h,))]

    (out_truth, *h_truth), (out_bound, *h_bounds) = fp32_layer_truth(layer, whole_sequence)
    for name, out in (("streamed", fast_out), ("general", slow_out), ("whole", whole_out)):
        assert_fp32_close(out, out_truth, out_bound, f"{name} output")
    for k, (fast, whole, e, bound) in enumerate(
        zip(fast_h, whole_h, h_truth, h_bounds, strict=True)
    ):
        assert_fp32_close(fast, e, bound, f"streamed final state {k}")
        assert_fp32_close(whole, e, bound, f"whole-sequence final state {k}")


def test_streaming_output_and_state_do_not_share_memory(step_calls):
    layer = rnnkit.GRU(4, 6).eval()
    with torch.no_grad():
        out, h = layer(torch.randn(1, 2, 4), torch.zeros(1, 2, 6))
        before = h.clone()
        out.add_(1.0)
    assert step_calls and torch.equal(h, before)


def test_streaming_falls_back_where_the_fast_path_does_not_apply(step_calls):
    """Grad mode, bidirectional, no state, bad states: the general path (and its errors)."""
    layer = rnnkit.LSTM(4, 6).eval()
    x, h = torch.randn(1, 2, 4), (torch.zeros(1, 2, 6), torch.zeros(1, 2, 6))
    out, _ = layer(x, h)  # grad mode: the autograd path
    assert out.requires_grad and not step_calls
    with torch.no_grad():
        layer(x)  # no state given
        rnnkit.LSTM(4, 6, bidirectional=True)(x, (torch.zeros(2, 2, 6),) * 2)
        with pytest.raises(ValueError, match="h_0"):
            layer(x, (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6)))
        with pytest.raises((ValueError, TypeError, RuntimeError)):
            layer(x, (torch.zeros(1, 2, 6, dtype=torch.float64),) * 2)
        assert not step_calls
        layer(x, h)
    assert step_calls


# ---- build and fallback -----------------------------------------------------------------


def test_compile_info_reports_the_load():
    info = fused.compile_info()
    assert "error" not in info
    assert info["seconds"] >= 0 and isinstance(info["cached"], bool)
    assert info["name"].startswith("rnnkit_fused_cpu_")


def test_build_failure_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_error", None)
    monkeypatch.setattr(fused, "_SOURCE", tmp_path / "missing.cpp")
    x = torch.randn(3, 2, 4)
    with pytest.warns(RuntimeWarning, match="could not be compiled"):
        assert kernels.select(CELLS["gru"], x) is runner.run_layer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.select(CELLS["lstm"], x) is runner.run_layer  # no second warning
    assert "error" in fused.compile_info()
    with rnnkit.use_backend("fused"), pytest.raises(RuntimeError, match="no fused kernel"):
        kernels.select(CELLS["gru"], x)
