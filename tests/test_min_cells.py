"""minGRU and minLSTM (Feng et al. 2024; ``rnnkit.nn.cells.minimal``): the NumPy
reference's BPTT against finite differences; the sequential composite path against the
reference; the parallel scan (``rnnkit.nn.kernels.scan``) against the sequential
recurrence over random shapes, variable lengths (zero included), negative initial
states, both directions and stacks (float64 within 1e-10, forward and every gradient;
fp32 within the error model of tests/error_model.py); streaming; bf16 autocast; the API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnkit
from helpers import TOLERANCE, assert_fp32_close, assert_rel_close, fp32_layer_truth, rnnkit_class
from rnnkit.diagnostics import gate_trace
from rnnkit.nn import kernels, reference, runner
from rnnkit.nn.cells import MINGRU, MINLSTM
from rnnkit.nn.factory import cell_module, recurrent_layer
from rnnkit.nn.kernels import fused, scan

CELLS = ("mingru", "minlstm")
F64 = torch.float64
BF16 = torch.bfloat16
BF16_BOUND = 8 * 2.0**-8  # as tests/test_autocast.py: 8 bf16 unit roundoffs, normwise


def _layer(cell, D, H, *, seed=0, scale=1.0, dtype=F64, **options):
    """An rnnkit layer whose weights are scaled by ``scale`` (4: saturated gates, both
    branches of g in use)."""
    torch.manual_seed(seed)
    layer = rnnkit_class(cell)(D, H, dtype=dtype, **options)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(scale)
    return layer


def _run(layer, backend, x, h0, lengths, dys, dh) -> list[torch.Tensor]:
    """[output, h_n, d x, d h0, d every parameter] of a linear loss, on fresh leaves."""
    x, h0 = x.clone().requires_grad_(), h0.clone().requires_grad_()
    with rnnkit.use_backend(backend):
        out, hn = layer(x, h0, lengths=lengths)
    loss = (out * dys).sum() + (hn * dh).sum()
    grads = torch.autograd.grad(loss, [x, h0, *layer.parameters()])
    return [out.detach(), hn.detach(), *grads]


def _problem(layer, T, B, lengths=None, seed=1, dtype=F64):
    """x [T, B, D], h0 mostly negative, loss weights, lengths; drawn in float64 and
    rounded to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    n = layer.num_layers * layer.num_directions

    def draw(*shape, mean=0.0, std=1.0):
        return (mean + std * torch.randn(*shape, generator=g, dtype=F64)).to(dtype)

    x = draw(T, B, layer.input_size)
    h0 = draw(n, B, layer.hidden_size, mean=-1.0, std=2.0)  # the log-space scan's hard case
    dys = draw(T, B, layer.num_directions * layer.hidden_size)
    dh = draw(n, B, layer.hidden_size)
    lengths = None if lengths is None else torch.as_tensor(lengths, dtype=torch.int64)
    return x, h0, lengths, dys, dh


def test_the_compiled_kernel_runs_them_on_the_cpu_and_the_scan_elsewhere():
    x = torch.randn(3, 2, 4)
    built = fused.load() is not None
    for cell in (MINGRU, MINLSTM):
        assert not cell.recurrent and not cell.standard
        for dtype in (torch.float32, F64):
            # on the CPU "auto" and "fused" take the compiled kernel (where it builds; the
            # step loop otherwise: the scan is slower there, scan.preferred)
            on_cpu = fused.run_layer if built else runner.run_layer
            assert kernels.select(cell, x.to(dtype)) is on_cpu
            with rnnkit.use_backend("scan"):
                assert kernels.select(cell, x.to(dtype)) is scan.run_layer
            assert scan.preferred(cell, x.to(dtype).to("meta"))  # off the CPU: the scan
            assert not fused.supports(cell, x.to(dtype).to("meta"))
        with rnnkit.use_backend("fused"), pytest.raises(RuntimeError, match=r"mingru|minlstm"):
            kernels.select(cell, x.to(BF16))  # a bf16 layer: the composite path only
        with rnnkit.use_backend("composite"):
            assert kernels.select(cell, x) is runner.run_layer
    assert not scan.supports(rnnkit.nn.CELLS["gru"], x)


# ---- the reference -----------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("cell", [MINGRU, MINLSTM], ids=lambda c: c.name)
def test_reference_backward_matches_finite_differences(cell, bias):
    """Central differences (float64) of every input of the reference: x, h0 (negative
    entries), w_ih, b_ih; the candidate's pre-activations take both of g's branches."""
    T, B, D, H, eps = 5, 2, 3, 4, 1e-6
    rng = np.random.default_rng(11)
    G = cell.num_gates * H
    p = reference.Params(rng.normal(0, 1.0, (G, D)), None, rng.normal(0, 0.5, G), None)
    if not bias:
        p.b_ih = None
    x, h0 = rng.normal(size=(T, B, D)), rng.normal(-1.0, 2.0, (B, H))
    dys, dh = rng.normal(size=(T, B, H)), rng.normal(size=(B, H))
    forward, backward = reference.for_cell(cell)
    _, _, cache = forward(x, (h0,), p)
    k_h = x @ p.w_ih[-H:].T + (0.0 if p.b_ih is None else p.b_ih[-H:])
    assert (k_h > 0).any() and (k_h < 0).any()  # g = k + 0.5 and g = sigmoid(k) both run
    grads = backward(cache, dys, (dh,))
    assert grads.w_hh is None and grads.b_hh is None

    def loss() -> float:
        ys, (hT,), _ = forward(x, (h0,), p)
        return float((ys * dys).sum() + (hT * dh).sum())

    checks = {"x": (x, grads.x), "h0": (h0, grads.state0[0]), "w_ih": (p.w_ih, grads.w_ih)}
    if bias:
        checks["b_ih"] = (p.b_ih, grads.b_ih)
    else:
        assert grads.b_ih is None
    for what, (array, analytic) in checks.items():
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + eps
            up = loss()
            array[index] = saved - eps
            down = loss()
            array[index] = saved
            numeric[index] = (up - down) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=what)


@pytest.mark.parametrize("backend", ["composite", "scan", "fused"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("cell", CELLS)
def test_one_direction_matches_the_reference(cell, bias, backend):
    """Outputs, h_n and every gradient against the hand-written BPTT, float64, 1e-10."""
    layer = _layer(cell, 4, 5, bias=bias, scale=3.0)
    x, h0, _, dys, dh = _problem(layer, 70, 3)  # two scan chunks
    got = _run(layer, backend, x, h0, None, dys, dh)
    forward, backward = reference.for_cell(layer.cell)
    w = [None if t is None else t.detach().numpy() for t in layer._direction_weights(0, 0)]
    ys, (hT,), cache = forward(x.numpy(), (h0[0].numpy(),), reference.Params(*w))
    g = backward(cache, dys.numpy(), (dh[0].numpy(),))
    expected = [ys, hT[None], g.x, g.state0[0][None], g.w_ih, *([g.b_ih] if bias else [])]
    names = ["output", "h_n", "d x", "d h0", "d weight_ih", "d bias_ih"][: len(expected)]
    for name, a, e in zip(names, got, expected, strict=True):
        assert_rel_close(a, e, TOLERANCE[F64], f"{cell} {backend} {name}")


# ---- the parallel scan against the sequential recurrence --------------------------------


def _assert_scan_equals_sequential(layer, T, B, lengths, seed=1):
    x, h0, lengths, dys, dh = _problem(layer, T, B, lengths, seed)
    scanned = _run(layer, "scan", x, h0, lengths, dys, dh)
    sequential = _run(layer, "composite", x, h0, lengths, dys, dh)
    names = ["output", "h_n", "d x", "d h0", *(f"d {n}" for n, _ in layer.named_parameters())]
    for name, a, e in zip(names, scanned, sequential, strict=True):
        assert_rel_close(a, e, TOLERANCE[F64], f"{layer.cell.name} T={T} {name}")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cell=st.sampled_from(CELLS),
    T=st.integers(1, 300),
    B=st.integers(1, 4),
    D=st.integers(1, 5),
    H=st.integers(1, 6),
    num_layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    scale=st.sampled_from([0.5, 1.0, 4.0]),
    data=st.data(),
)
def test_random_shapes(cell, T, B, D, H, num_layers, bidirectional, bias, scale, data):
    lengths = data.draw(st.none() | st.lists(st.integers(0, T), min_size=B, max_size=B))
    options = {"num_layers": num_layers, "bidirectional": bidirectional, "bias": bias}
    layer = _layer(cell, D, H, scale=scale, **options)
    _assert_scan_equals_sequential(layer, T, B, lengths)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(
    "T, lengths",
    [
        (1, [1, 0, 1]),  # one step, an empty sequence
        (64, [64, 63, 1]),  # exactly one chunk
        (65, [65, 64, 0]),  # one step into the second chunk; lengths on the boundary
        (300, [300, 129, 128]),  # five chunks, the last one ragged
        (7, [0, 0, 0]),  # every sequence empty: h_n = h0, outputs zero
    ],
)
def test_chunk_boundaries_and_empty_sequences(cell, T, lengths):
    layer = _layer(cell, 3, 4, num_layers=2, bidirectional=True, scale=2.0)
    _assert_scan_equals_sequential(layer, T, len(lengths), lengths)
    x, h0, lengths_t, _, _ = _problem(layer, T, len(lengths), lengths)
    with torch.no_grad():
        out, hn = layer(x, h0, lengths=lengths_t)
    for b, L in enumerate(lengths):
        assert not out[L:, b].any()
        if L == 0:
            assert torch.equal(hn[:, b], h0[:, b])


@pytest.mark.parametrize("cell", CELLS)
def test_fp32_scan_is_within_the_error_model(cell, one_thread):
    """The fp32 scan (and the fp32 sequential path) within the bound of a correct fp32
    computation of the exact result, over 130 steps (three chunks), lengths, both
    directions, two layers, saturated gates."""
    layer = _layer(cell, 3, 5, num_layers=2, bidirectional=True, scale=2.0, dtype=torch.float32)
    lengths = [130, 0, 77]
    x, h0, lengths_t, dys, dh = _problem(layer, 130, 3, lengths, dtype=torch.float32)

    def run(m, backend="composite"):
        dtype = next(m.parameters()).dtype
        return _run(m, backend, x.to(dtype), h0.to(dtype), lengths_t, dys.to(dtype), dh.to(dtype))

    truth, bounds = fp32_layer_truth(layer, run)
    for backend in ("scan", "fused", "composite"):
        for k, (a, e, bound) in enumerate(zip(run(layer, backend), truth, bounds, strict=True)):
            assert_fp32_close(a, e, bound, f"{cell} {backend} tensor #{k}")


def test_chunks_bound_the_log_space_cancellation():
    """log s_t = a*_t + logcumsumexp(log b - a*)_t loses |a*_t| ulps: over 2048 strongly
    forgetting steps in fp32 the unchunked scan is far off, the chunked one is not."""
    g = torch.Generator().manual_seed(0)
    T, B, H = 2048, 2, 8
    log_a = -3.0 * torch.rand(T, B, H, generator=g, dtype=F64)  # a in (0.05, 1)
    log_b = torch.randn(T, B, H, generator=g, dtype=F64)
    h0 = torch.randn(B, H, generator=g, dtype=F64)
    exact, h = [], h0
    for t in range(T):
        h = log_a[t].exp() * h + log_b[t].exp()
        exact.append(h)
    truth = torch.stack(exact)

    def error(chunk: int) -> float:
        h = scan.linear_scan(log_a.float(), log_b.float(), h0.float(), chunk=chunk)
        return float(((h.double() - truth).abs() / truth.abs()).max())

    chunked, whole = error(scan.CHUNK), error(T)
    assert chunked < 2e-5, chunked  # ~ 64 steps x 1.5 x 2^-24, with room
    assert whole > 10 * chunked, (whole, chunked)


# ---- streaming ---------------------------------------------------------------------------


@pytest.fixture
def scan_steps(monkeypatch):
    """Counts the calls of the scan kernel's single-step function (the streaming path)."""
    calls: list[int] = []

    def counting(*args, **kwargs):
        calls.append(1)
        return scan.step(*args, **kwargs)

    kernel = kernels.Kernel("scan", scan.supports, scan.run_layer, counting)
    monkeypatch.setattr(kernels, "_kernels", [kernel])
    return calls


def _stream(layer, xs, hx, *, general=False, autocast=False):
    """Feed xs [T, B, D] one step at a time, no grad; general=True takes the general path
    (lengths= of ones, which the step path declines) -> [outputs, h_n]."""
    outs = []
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16, enabled=autocast):
        for t in range(xs.shape[0]):
            lengths = torch.ones(xs.shape[1], dtype=torch.int64) if general else None
            out, hx = layer(xs[t : t + 1], hx, lengths=lengths)
            outs.append(out)
    return [torch.cat(outs), hx]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("num_layers", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_streaming_steps_equal_the_whole_sequence(cell, num_layers, dtype, scan_steps):
    layer = _layer(cell, 5, 7, num_layers=num_layers, dtype=dtype, scale=2.0).eval()
    x, h0, _, _, _ = _problem(layer, 9, 3, dtype=dtype)
    streamed = _stream(layer, x, h0)
    assert len(scan_steps) == 9 * num_layers  # the sequential step, not the scan
    with torch.no_grad():
        whole = list(layer(x, h0))
    if dtype == F64:
        for name, a, e in zip(["output", "h_n"], streamed, whole, strict=True):
            assert_rel_close(a, e, TOLERANCE[F64], f"streamed {name}")
        return

    def whole_sequence(m):
        with torch.no_grad():
            return list(m(x.double(), h0.double()))

    truth, bounds = fp32_layer_truth(layer, whole_sequence)
    for name, a, b, e, bound in zip(["output", "h_n"], streamed, whole, truth, bounds, strict=True):
        assert_fp32_close(a, e, bound, f"streamed {name}")
        assert_fp32_close(b, e, bound, f"scanned {name}")


# ---- bf16 autocast --------------------------------------------------------------------


def _away_from_zero(layer):
    """Candidate biases of 3: g's derivative jumps at 0 (1/4 below, 1 above), so a
    pre-activation that bf16 rounding moves across 0 would change its gradient by O(1)
    in any bf16 implementation; these stay far above it."""
    H = layer.hidden_size
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("bias_ih"):
                p[-H:] = 3.0
    return layer


@pytest.mark.parametrize("backend", ["scan", "fused"])
@pytest.mark.parametrize("cell", CELLS)
def test_training_under_autocast_is_within_the_bf16_bound(cell, backend, one_thread):
    """bf16 products in the input projections, fp32 recurrence (the scan, or the compiled
    kernel's loop): outputs (bf16, as torch.nn's LSTM returns) and every gradient (fp32)
    within the bf16 bound of the fp32 run."""
    layer = _away_from_zero(_layer(cell, 4, 6, num_layers=2, bidirectional=True, dtype=None))
    x, h0, lengths, dys, dh = _problem(layer, 70, 3, [70, 0, 33], dtype=torch.float32)
    results = []
    for autocast in (True, False):
        x_, h0_ = x.clone().requires_grad_(), h0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=BF16, enabled=autocast), rnnkit.use_backend(backend):
            out, hn = layer(x_, h0_, lengths=lengths)
        assert out.dtype == hn.dtype == (BF16 if autocast else torch.float32)
        loss = (out.float() * dys).sum() + (hn.float() * dh).sum()
        grads = torch.autograd.grad(loss, [x_, h0_, *layer.parameters()])
        assert all(g.dtype == torch.float32 for g in grads)
        results.append([out, hn, *grads])
    for k, (got, ref) in enumerate(zip(*results, strict=True)):
        error = float((got.detach().double() - ref.detach().double()).norm())
        assert error <= BF16_BOUND * float(ref.detach().double().norm()) + 1e-6, (k, error)
    assert not torch.equal(results[0][0], results[1][0].to(BF16))  # bf16 products ran


@pytest.mark.parametrize("cell", CELLS)
def test_streaming_under_autocast_is_the_general_paths_bf16_step(cell, scan_steps):
    layer = _away_from_zero(_layer(cell, 5, 7, num_layers=2, dtype=None)).eval()
    x, h0, _, _, _ = _problem(layer, 5, 3, dtype=torch.float32)
    got = _stream(layer, x, h0, autocast=True)
    assert len(scan_steps) == 5 * 2
    general = _stream(layer, x, h0, general=True, autocast=True)
    assert len(scan_steps) == 5 * 2
    fp32 = _stream(layer, x, h0)
    assert [t.dtype for t in got] == [BF16, BF16] == [t.dtype for t in general]
    for what, results in (("streamed", got), ("general", general)):
        for k, (a, e) in enumerate(zip(results, fp32, strict=True)):
            error = float((a.double() - e.double()).norm())
            assert error <= BF16_BOUND * float(e.double().norm()) + 1e-6, (what, k, error)


# ---- the API -------------------------------------------------------------------------------


@pytest.mark.parametrize("cell, G", [("mingru", 2), ("minlstm", 3)])
def test_parameters_states_and_factory(cell, G):
    layer = recurrent_layer(cell, 4, 6, 2, bidirectional=True)
    assert type(layer) is rnnkit_class(cell) and layer.cell.name == cell
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {
        "weight_ih_l0": (G * 6, 4),
        "bias_ih_l0": (G * 6,),
        "weight_ih_l0_reverse": (G * 6, 4),
        "bias_ih_l0_reverse": (G * 6,),
        "weight_ih_l1": (G * 6, 12),
        "bias_ih_l1": (G * 6,),
        "weight_ih_l1_reverse": (G * 6, 12),
        "bias_ih_l1_reverse": (G * 6,),
    }
    assert layer.state_sizes == (6,) and layer.output_size == 6
    copy = recurrent_layer(cell, 4, 6, 2, bidirectional=True)
    copy.load_state_dict(layer.state_dict())
    x = torch.randn(5, 3, 4)
    out, hn = layer(x)  # one state, a tensor (the minLSTM has no c)
    assert out.shape == (5, 3, 12) and hn.shape == (4, 3, 6)
    torch.testing.assert_close(copy(x)[0], out, rtol=0, atol=0)
    with pytest.raises(ValueError, match="h_0"):
        layer(x, torch.zeros(4, 2, 6))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("cell", CELLS)
def test_the_cell_module_is_one_step_of_the_layer(cell, bias):
    step = cell_module(cell, 4, 6, bias=bias).double()
    assert [n for n, _ in step.named_parameters()] == ["weight_ih", *(["bias_ih"] if bias else [])]
    layer = rnnkit_class(cell)(4, 6, bias=bias, dtype=F64)
    layer.load_state_dict({f"{n}_l0": p for n, p in step.state_dict().items()})
    x, h = torch.randn(3, 4, dtype=F64), torch.randn(3, 6, dtype=F64)
    out, _ = layer(x[None], h[None])
    assert_rel_close(step(x, h), out[0], TOLERANCE[F64], "one step")


def test_torch_export_with_a_fixed_T_on_the_scan_and_a_free_T_on_the_cpu_kernel(tmp_path):
    """The scan's chunk loop unrolls while tracing: T is fixed, B stays free (as the
    composite path; docs/cells.md); the compiled kernel's operator leaves both free. ONNX
    has no form of these cells and says so."""
    from rnnkit.export import ExportError, load_torch_export, to_onnx, to_torch_export

    layer = rnnkit.MinLSTM(4, 6, num_layers=2, bidirectional=True).eval()
    if fused.load() is not None:
        program = to_torch_export(layer, (torch.randn(9, 3, 4),), dynamic=("TB.",))
        x = torch.randn(13, 2, 4)
        with torch.no_grad():
            for a, e in zip(program.module()(x), layer(x), strict=True):
                torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
    path = tmp_path / "minlstm.pt2"
    with rnnkit.use_backend("scan"):
        to_torch_export(layer, (torch.randn(70, 3, 4),), path, dynamic=(".B.",))
    x = torch.randn(70, 5, 4)
    with torch.no_grad():
        for a, e in zip(load_torch_export(path).module()(x), layer(x), strict=True):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
    with pytest.raises(ExportError, match="no form of the cell 'minlstm'"):
        to_onnx(layer, (x,), tmp_path / "minlstm.onnx")


@pytest.mark.parametrize("cell", CELLS)
def test_the_diagnostics_read_the_sigmoid_gates(cell):
    """``gate_trace`` (``Cell.gates``, no recurrent weight): minGRU's z, minLSTM's i and f
    (before their normalisation), of the reverse direction, and its hidden states."""
    H = 4
    layer = _layer(cell, 3, H, bidirectional=True)
    x = torch.randn(6, 2, 3, dtype=F64)
    trace = gate_trace(layer, x, direction=1)
    w_ih, _, b_ih, _ = layer._direction_weights(0, 1)
    k = F.linear(x, w_ih, b_ih)  # [T, B, G]
    assert (
        tuple(trace.gates)
        == layer.cell.gate_names
        == {"mingru": ("z",), "minlstm": ("i", "f")}[cell]
    )
    for j, name in enumerate(layer.cell.gate_names):
        assert_rel_close(trace.gates[name], torch.sigmoid(k[..., j * H : (j + 1) * H]), 1e-14)
    with torch.no_grad():
        out, _ = layer(x)
    assert_rel_close(trace.hidden, out[..., H:], TOLERANCE[F64], "hidden states")


@pytest.mark.parametrize("cls", [rnnkit.MinGRU, rnnkit.MinLSTM])
def test_regularisers_without_a_recurrent_product_are_refused_the_others_apply(cls):
    """No W_hh: recurrent dropout and weight drop are one error naming the cell; zoneout
    holds units (its expectation in evaluation) and locked dropout runs, on the kernel
    "auto" picks (the compiled one on the CPU)."""
    for name in ("recurrent_dropout", "weight_drop"):
        with pytest.raises(ValueError, match=name):
            cls(4, 6, **{name: 0.2})
    torch.manual_seed(0)
    zoned = cls(4, 6, zoneout=0.5, variational_dropout=0.2, dtype=F64)
    plain = cls(4, 6, dtype=F64)
    plain.load_state_dict(zoned.state_dict())
    x = torch.randn(5, 3, 4, dtype=F64)
    h0 = torch.randn(1, 3, 6, dtype=F64)
    with torch.no_grad():
        zoned.eval(), plain.eval()
        out, _ = zoned(x, h0)
        ref, previous = [], h0[0]
        for t in range(5):  # s_t = p s_{t-1} + (1 - p) s_new, s_new from the zoned state
            new = plain(x[t : t + 1], previous[None])[0][0]
            previous = 0.5 * previous + 0.5 * new
            ref.append(previous)
        torch.testing.assert_close(out, torch.stack(ref), rtol=1e-12, atol=1e-12)
        zoned.train()
        torch.manual_seed(1)
        trained, _ = zoned(x, h0)
        assert not torch.equal(trained, out)


@pytest.mark.skipif(fused.load() is None, reason="the fused extension did not build")
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cell", CELLS)
def test_zoneout_on_the_compiled_kernel_matches_the_step_loop(cell, training):
    """Zoneout (per-step keep-masks in training, its expectation in evaluation) and
    variational dropout inside the compiled kernel: outputs, h_n and every gradient equal
    the composite step loop's under the same seed, float64 to 1e-10, over two
    bidirectional layers, variable lengths (an empty sequence) and saturated gates."""
    layer = _layer(
        cell,
        4,
        5,
        num_layers=2,
        bidirectional=True,
        scale=3.0,
        zoneout=0.4,
        variational_dropout=0.2,
    )
    layer.train(training)
    x, h0, lengths, dys, dh = _problem(layer, 9, 3, [9, 0, 4])
    assert kernels.select(layer.cell, x, noise=True) is fused.run_layer
    runs = {}
    for backend in ("composite", "fused"):
        torch.manual_seed(5)
        runs[backend] = _run(layer, backend, x, h0, lengths, dys, dh)
    names = ["output", "h_n", "d x", "d h0", *(f"d {n}" for n, _ in layer.named_parameters())]
    for name, a, e in zip(names, runs["fused"], runs["composite"], strict=True):
        assert_rel_close(a, e, TOLERANCE[F64], f"{cell} {name}")
    torch.manual_seed(6)
    other = _run(layer, "fused", x, h0, lengths, dys, dh)
    assert training != torch.equal(other[0], runs["fused"][0])  # training draws fresh masks
