"""The layer-normalised LSTM and GRU (``rnnkit.nn.cells.layer_norm``, Ba et al. 2016 in
haste's placement): the NumPy reference's hand-written BPTT against central finite
differences; the composite path (autograd) and the fused CPU kernel (its own backward)
against the reference in float64 over random layer configurations (depth, directions,
bias, batch_first, lengths, packed and unbatched input, given states), forward and every
gradient; the fused kernel against the composite path in fp32 (the error model), under
every regulariser, under bf16 autocast, streaming and through its custom operators; eps;
the parameters and their starting values; the cell modules; the diagnostics; export; and
the arguments they refuse."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import rnnkit
from helpers import TOLERANCE, assert_fp32_close, assert_rel_close, fp32_layer_truth
from rnnkit.common.names import CELL_NAMES
from rnnkit.diagnostics import gate_trace, unroll
from rnnkit.nn import kernels, reference, runner
from rnnkit.nn.cells import CELLS, GRU_LN, LSTM_LN, Cell
from rnnkit.nn.cells.layer_norm import EPS
from rnnkit.nn.factory import cell_module, recurrent_layer
from rnnkit.nn.kernels import fused, ops, precision
from rnnkit.nn.kernels.precision import reduced_products
from rnnkit.nn.layers import RNNBase

LN_CELLS = (LSTM_LN, GRU_LN)
RTOL = TOLERANCE[torch.float64]
F64 = torch.float64


def _layer(cell: Cell, D: int, H: int, **kwargs) -> RNNBase:
    """The layer of ``cell`` through the public API (``layer_norm=True``)."""
    cls = rnnkit.LSTM if cell is LSTM_LN else rnnkit.GRU
    return cls(D, H, layer_norm=True, **kwargs)


def _perturb(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.3) -> None:
    """Move every parameter off its starting value (the gains off 1), in place."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))


# --- the reference's BPTT against finite differences -----------------------------------

T, B, D, H = 4, 2, 3, 4


def _numeric(f, array: np.ndarray, step: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of ``array``."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + step
        up = f()
        array[index] = saved - step
        down = f()
        array[index] = saved
        grad[index] = (up - down) / (2 * step)
    return grad


@pytest.mark.parametrize("eps", [None, 0.5], ids=["record_eps", "eps0.5"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_reference_backward_matches_finite_differences(cell: Cell, bias: bool, eps):
    """Every parameter (gains and biases of the norms included), the input and every
    initial state; a large eps as well, so eps's place in the backward is checked."""
    rng = np.random.default_rng(len(cell.name) + 2 * bias)
    named = {
        kind: (cell.initial_value(kind) or 0.0) + rng.normal(0, 0.6, shape)
        for kind, shape in cell.parameters(D, H, bias)
    }
    params = reference.params(cell, named)  # holds the very arrays of ``named``
    forward, backward = reference.for_cell(cell)
    options = {} if eps is None else {"eps": eps}
    x = rng.normal(size=(T, B, D))
    state0 = tuple(rng.normal(size=(B, H)) for _ in range(cell.num_states))
    dys = rng.normal(size=(T, B, H))
    dfinal = tuple(rng.normal(size=(B, H)) for _ in range(cell.num_states))
    _, _, cache = forward(x, state0, params, **options)
    grads = backward(cache, dys, dfinal)

    def loss() -> float:
        ys, final, _ = forward(x, state0, params, **options)
        by_state = sum((f * d).sum() for f, d in zip(final, dfinal, strict=True))
        return float((ys * dys).sum() + by_state)

    analytic = {"x": grads.x, **reference.named_grads(grads)}
    arrays = {"x": x, **named}
    for k, (s, g) in enumerate(zip(state0, grads.state0, strict=True)):
        analytic[f"state0[{k}]"], arrays[f"state0[{k}]"] = g, s
    assert set(analytic) == set(arrays)  # a gradient for every parameter, none extra
    for what, array in arrays.items():
        assert analytic[what].shape == array.shape, what
        np.testing.assert_allclose(
            analytic[what], _numeric(loss, array), rtol=1e-6, atol=1e-8, err_msg=what
        )


# --- the composite path against the reference, float64 ---------------------------------


@dataclass(frozen=True)
class Case:
    cell: Cell
    mode: str  # "full", "padded" (lengths=), "packed" (PackedSequence), "unbatched"
    num_layers: int
    bidirectional: bool
    bias: bool
    batch_first: bool
    initial_state: bool
    T: int
    B: int
    D: int
    H: int

    @property
    def id(self) -> str:
        return (
            f"{self.cell.name}-{self.mode}-L{self.num_layers}-"
            f"{'bi' if self.bidirectional else 'uni'}-{'bias' if self.bias else 'nobias'}-"
            f"{'bf' if self.batch_first else 'tf'}-{'h0' if self.initial_state else 'noh0'}-"
            f"T{self.T}B{self.B}D{self.D}H{self.H}"
        )


def _cases(per_mode: int = 5) -> list[Case]:
    """Random configurations, ``per_mode`` for each cell and length mode (seeded)."""
    draw = random.Random(20)
    cases = []
    for cell in LN_CELLS:
        for mode in ("full", "padded", "packed", "unbatched"):
            for _ in range(per_mode):
                flags = [draw.random() < 0.5 for _ in range(4)]
                cases.append(
                    Case(
                        cell,
                        mode,
                        draw.randint(1, 3),
                        *flags,
                        T=draw.randint(1, 6),
                        B=1 if mode == "unbatched" else draw.randint(1, 4),
                        D=draw.randint(1, 5),
                        H=draw.randint(2, 6),  # (a norm over H = 1 entry is its bias)
                    )
                )
    return cases


def _reference_sequence(layer: RNNBase, x, state0: list[tuple], dys, dfinal: list[tuple]):
    """Forward and backward of the whole stack on one sequence in the NumPy reference:
    x [L, 1, D], dys [L, 1, dirs*H]; state0/dfinal one state tuple per layer-direction.
    -> (out [L, 1, dirs*H], finals, {parameter name: gradient}, dx, dstate0)."""
    forward, backward = reference.for_cell(layer.cell)
    dirs, H = layer.num_directions, layer.hidden_size
    kinds = [kind for kind, _ in layer.cell.parameters(1, H, layer.bias)]
    named = dict(layer.named_parameters())
    if len(x) == 0:  # a zero length: the state passes through, nothing else moves
        return np.zeros((0, 1, dirs * H)), list(state0), {}, np.zeros_like(x), list(dfinal)

    def suffix(layer_index: int, d: int) -> str:
        return f"_l{layer_index}" + ("_reverse" if d else "")

    def params(k: int, d: int):
        w = {kind: named[kind + suffix(k, d)].detach().numpy() for kind in kinds}
        return reference.params(layer.cell, w)

    caches, finals, inp = [], [], x
    for k in range(layer.num_layers):
        outs = []
        for d in range(dirs):
            seq = inp if d == 0 else inp[::-1]
            ys, final, cache = forward(seq, state0[k * dirs + d], params(k, d))
            outs.append(ys if d == 0 else ys[::-1])
            caches.append(cache)
            finals.append(final)
        inp = np.concatenate(outs, axis=2)
    out = inp
    grads: dict[str, np.ndarray] = {}
    dstate0: list = [None] * len(caches)
    dout = dys
    for k in reversed(range(layer.num_layers)):
        dinp = 0.0
        for d in range(dirs):
            dy = dout[..., d * H : (d + 1) * H]
            g = backward(caches[k * dirs + d], dy if d == 0 else dy[::-1], dfinal[k * dirs + d])
            dinp = dinp + (g.x if d == 0 else g.x[::-1])
            dstate0[k * dirs + d] = g.state0
            grads |= {kind + suffix(k, d): v for kind, v in reference.named_grads(g).items()}
        dout = dinp
    return out, finals, grads, dout, dstate0


BUILT = fused.load() is not None
needs_fused = pytest.mark.skipif(not BUILT, reason="the fused extension did not build")
BACKENDS = ["composite", pytest.param("fused", marks=needs_fused)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c.id)
def test_each_path_matches_the_reference(case: Case, backend: str):
    """Outputs, final states and the gradients of a random linear loss with respect to the
    input, the initial states and every parameter, float64 to 1e-10, on the composite path
    and on the fused kernel. Variable lengths are checked against each sequence run alone
    in the reference (outputs past a length are zero, the final state is taken at the
    sequence's own end)."""
    g = torch.Generator().manual_seed(zlib.crc32(case.id.encode()))
    torch.manual_seed(0)
    layer = _layer(
        case.cell,
        case.D,
        case.H,
        num_layers=case.num_layers,
        bidirectional=case.bidirectional,
        bias=case.bias,
        batch_first=case.batch_first,
        dtype=F64,
    )
    _perturb(layer, g)
    dirs, S = layer.num_directions, case.cell.num_states
    n, Tn, Bn = case.num_layers * dirs, case.T, case.B
    x = torch.randn(Tn, Bn, case.D, generator=g, dtype=F64)
    states = [torch.randn(n, Bn, case.H, generator=g, dtype=F64) for _ in range(S)]
    if not case.initial_state:
        states = [torch.zeros_like(s) for s in states]
    dys = torch.randn(Tn, Bn, dirs * case.H, generator=g, dtype=F64)
    dfinal = [torch.randn(n, Bn, case.H, generator=g, dtype=F64) for _ in range(S)]
    lengths = torch.full((Bn,), Tn)
    if case.mode in ("padded", "packed"):
        low = 1 if case.mode == "packed" else 0  # a PackedSequence has no empty sequence
        lengths = torch.randint(low, Tn + 1, (Bn,), generator=g)
        lengths[0] = Tn

    # the layer, in the case's input mode
    with kernels.use_backend(backend):  # both the forward and the backward
        xl = x.clone().requires_grad_()
        hl = [s.clone().requires_grad_() for s in states]
        inp = xl.transpose(0, 1) if case.batch_first else xl
        given = tuple(h[:, 0] for h in hl) if case.mode == "unbatched" else tuple(hl)  # [n, (B,) H]
        hx = (given[0] if S == 1 else given) if case.initial_state else None
        if case.mode == "unbatched":
            out, final = layer(xl[:, 0], hx)
            out = out[:, None]
            final = tuple(f[:, None] for f in (final if S == 2 else (final,)))
        elif case.mode == "packed":
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                inp, lengths, batch_first=case.batch_first, enforce_sorted=False
            )
            out, final = layer(packed, hx)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(
                out, batch_first=case.batch_first, total_length=Tn
            )
        elif case.mode == "padded":
            out, final = layer(inp, hx, lengths=lengths)
        else:
            out, final = layer(inp, hx)
        if case.mode != "unbatched":
            out = out.transpose(0, 1) if case.batch_first else out
            final = final if S == 2 else (final,)
        loss = (out * dys).sum() + sum((f * d).sum() for f, d in zip(final, dfinal, strict=True))
        params = dict(layer.named_parameters())
        leaves = [xl, *(hl if case.initial_state else []), *params.values()]
        actual = torch.autograd.grad(loss, leaves)

    # the reference, one sequence at a time
    ref_out = np.zeros(out.shape)
    ref_final = [np.zeros(f.shape) for f in final]
    ref_dx = np.zeros(x.shape)
    ref_dstate = [np.zeros(s.shape) for s in states]
    ref_grads = {name: np.zeros(p.shape) for name, p in params.items()}
    for b in range(Bn):
        L = int(lengths[b])
        one = [tuple(s[k, b : b + 1].numpy() for s in states) for k in range(n)]
        d_one = [tuple(d[k, b : b + 1].numpy() for d in dfinal) for k in range(n)]
        o, fin, gr, dx, ds = _reference_sequence(
            layer, x[:L, b : b + 1].numpy(), one, dys[:L, b : b + 1].numpy(), d_one
        )
        ref_out[:L, b] = o[:, 0]
        ref_dx[:L, b] = dx[:, 0]
        for k in range(n):
            for s in range(S):
                ref_final[s][k, b] = fin[k][s][0]
                ref_dstate[s][k, b] = ds[k][s][0]
        for name, v in gr.items():
            ref_grads[name] += v

    assert_rel_close(out, ref_out, RTOL, "output")
    for s in range(S):
        assert_rel_close(final[s], ref_final[s], RTOL, f"final state {s}")
    assert_rel_close(actual[0], ref_dx, RTOL, "d input")
    rest = actual[1:]
    if case.initial_state:
        for s in range(S):
            assert_rel_close(rest[s], ref_dstate[s], RTOL, f"d initial state {s}")
        rest = rest[S:]
    for (name, _), got in zip(params.items(), rest, strict=True):
        assert_rel_close(got, ref_grads[name], RTOL, f"d {name}")


@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_eps_enters_as_in_the_reference(cell: Cell):
    """Weights so small that var(W x) and var(U h) are near eps, where eps changes the
    result: the composite path equals the reference run with the record's eps (1e-5,
    haste's and torch.nn.LayerNorm's), and is far from one run with eps 2e-5."""
    assert dict(cell.options) == {"eps": EPS} and EPS == 1e-5
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(0)
    layer = _layer(cell, D, H, dtype=F64)
    _perturb(layer, g)
    with torch.no_grad():
        layer.weight_ih_l0.mul_(3e-3)
        layer.weight_hh_l0.mul_(3e-3)
    x = torch.randn(T, 1, D, generator=g, dtype=F64)
    out, _ = layer(x)
    forward, _ = reference.for_cell(cell)
    w = {n.removesuffix("_l0"): p.detach().numpy() for n, p in layer.named_parameters()}
    state0 = tuple(np.zeros((1, H)) for _ in range(cell.num_states))
    same, _, (_, _, saved) = forward(x.numpy(), state0, reference.params(cell, w))
    other, _, _ = forward(x.numpy(), state0, reference.params(cell, w), eps=2 * EPS)
    nx = saved[-1][-3 if cell is LSTM_LN else -2]  # the input norm's (x^, r) at the last step
    assert float((1.0 / nx[1] ** 2).max()) < 100 * EPS  # var + eps: eps is not negligible
    assert_rel_close(out, same, RTOL, "output, the record's eps")
    assert np.abs(out.detach().numpy() - other).max() > 1e-4 * np.abs(other).max()


# --- the record, the layer's parameters, the dispatch ----------------------------------


def test_parameters_names_shapes_and_starting_values():
    lstm = rnnkit.LSTM(3, 5, num_layers=2, bidirectional=True, layer_norm=True)
    per_direction = [
        ("weight_ih", (20, 3)),
        ("weight_hh", (20, 5)),
        ("bias_ih", (20,)),
        ("bias_hh", (20,)),
        ("ln_ih_weight", (20,)),
        ("ln_hh_weight", (20,)),
        ("ln_c_weight", (5,)),
        ("ln_c_bias", (5,)),
    ]
    expected = []
    for layer_index in range(2):
        for suffix in ("", "_reverse"):
            for kind, shape in per_direction:
                if layer_index == 1 and kind == "weight_ih":
                    shape = (20, 10)  # both directions' outputs
                expected.append((f"{kind}_l{layer_index}{suffix}", shape))
    assert [(k, tuple(v.shape)) for k, v in lstm.state_dict().items()] == expected
    assert lstm._flat_weights_names == [name for name, _ in expected]
    for name, p in lstm.named_parameters():
        if name.startswith(("ln_ih_weight", "ln_hh_weight", "ln_c_weight")):
            assert torch.equal(p, torch.ones_like(p)), name
        elif name.startswith("ln_c_bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        else:  # torch.nn's U(-1/sqrt(H), 1/sqrt(H))
            assert p.abs().max() <= 5**-0.5 and p.std() > 0, name

    gru = rnnkit.GRU(3, 5, bias=False, layer_norm=True)
    assert [(k, tuple(v.shape)) for k, v in gru.state_dict().items()] == [
        ("weight_ih_l0", (15, 3)),
        ("weight_hh_l0", (15, 5)),
        ("ln_ih_weight_l0", (15,)),
        ("ln_hh_weight_l0", (15,)),
    ]
    no_bias = rnnkit.LSTM(3, 5, bias=False, layer_norm=True)
    assert [k for k in no_bias.state_dict() if "bias" in k] == []  # ln_c_bias goes too


@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_state_dict_round_trip_and_forget_bias(cell: Cell):
    torch.manual_seed(1)
    a = _layer(cell, 3, 4, num_layers=2)
    _perturb(a, torch.Generator().manual_seed(2))
    torch.manual_seed(2)
    b = _layer(cell, 3, 4, num_layers=2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 2, 3)
    for p, q in zip(a(x), b(x), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    if cell is LSTM_LN:  # added after the norms: the forget gate's total bias is 1
        lstm = rnnkit.LSTM(3, 4, layer_norm=True, unit_forget_bias=True)
        assert torch.equal(lstm.bias_ih_l0[4:8], torch.ones(4))
        assert torch.equal(lstm.bias_hh_l0[4:8], torch.zeros(4))


@pytest.mark.parametrize("init", ["uniform", "orthogonal"])
def test_a_task_model_s_own_init_keeps_the_gains_at_one(init: str):
    """The language model's init redraws every parameter; the layer's ``reset_constants``
    puts the norms' gains back to 1 (and b_c to 0), as the record starts them."""
    from rnnkit.tasks.lm.config import LMConfig
    from rnnkit.tasks.lm.model import LanguageModel

    model = LanguageModel(LMConfig(cell="lstm_ln", init=init, hidden_size=8), 11)
    for name, p in model.rnn.named_parameters():
        start = model.rnn.cell.initial_value(name.rsplit("_l", 1)[0])
        if start is not None:
            assert torch.equal(p, torch.full_like(p, start)), name
    assert float(model.rnn.bias_ih_l0[8:16].detach().min()) == 1.0  # unit forget bias


@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_the_record_keeps_the_bias_out_of_the_input_projection(cell: Cell):
    """``direction_weights`` hands the runner no bias for gx = x W_ih^T (the norm would
    remove it), and every parameter after the two matrices, in the record's order, as the
    step's extras; the names reach the layer, the factory and the torch-free list."""
    layer = _layer(cell, 3, 4)
    w = layer._direction_weights(0, 0)
    assert w[0] is layer.weight_ih_l0 and w[1] is layer.weight_hh_l0
    assert w[2] is None and w[3] is None
    kinds = [k for k, _ in cell.parameters(3, 4, True)][2:]
    assert list(w[4:]) == [getattr(layer, f"{k}_l0") for k in kinds]
    assert not cell.standard and cell.torch_mode is None
    assert CELLS[cell.name] is cell and recurrent_layer(cell.name, 3, 4).cell is cell
    assert cell.name in CELL_NAMES


@needs_fused
@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_the_fused_kernel_runs_them_and_streams_by_their_step(cell: Cell):
    """ "auto" takes the fused kernel on the CPU (fp32, fp64); a bf16 layer and other
    devices run the composite path; streaming (one step, a given state, no grad) runs the
    cell's own step through the kernel's single-step function: equal to the general
    path's whole-sequence run, step after step."""
    x = torch.randn(2, 1, 3)
    for dtype in (torch.float32, F64):
        assert kernels.select(cell, x.to(dtype)) is fused.run_layer
        assert kernels.select_step(cell, x.to(dtype)) is fused.step
    assert kernels.select(cell, x.bfloat16()) is runner.run_layer
    assert not fused.supports(cell, x.to("meta"))
    layer = _layer(cell, 3, 4, num_layers=2, dtype=F64)
    _perturb(layer, torch.Generator().manual_seed(2))
    xs = torch.randn(6, 2, 3, dtype=F64)
    hx = tuple(torch.randn(2, 2, 4, dtype=F64) for _ in range(cell.num_states))
    hx = hx if len(hx) == 2 else hx[0]
    with torch.no_grad():
        whole, whole_final = layer(xs, hx)
        state, outs = hx, []
        for t in range(6):
            out, state = layer(xs[t : t + 1], state)
            outs.append(out)
    assert_rel_close(torch.cat(outs), whole, RTOL, "streamed outputs")
    for a, e in zip(
        state if len(hx) == 2 else (state,),
        whole_final if len(hx) == 2 else (whole_final,),
        strict=True,
    ):
        assert_rel_close(a, e, RTOL, "streamed final state")
    with kernels.use_backend("composite"), torch.no_grad():
        composite, _ = layer(xs, hx)
    assert_rel_close(whole, composite, RTOL, "fused against composite")


# --- the cell modules, the diagnostics, export -----------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_cell_module_is_one_step_of_the_layer(cell: Cell, bias: bool):
    step = cell_module(cell.name, 3, 4, bias=bias).double()
    layer = recurrent_layer(cell.name, 3, 4).double()
    if not bias:
        layer = _layer(cell, 3, 4, bias=False, dtype=F64)
        assert step.bias_ih is None and step.bias_hh is None
    assert step.cell is cell
    _perturb(step, torch.Generator().manual_seed(3))
    layer.load_state_dict({k + "_l0": v for k, v in step.state_dict().items()})
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 2, 3, generator=g, dtype=F64)
    state = tuple(torch.randn(2, 4, generator=g, dtype=F64) for _ in range(cell.num_states))
    out, _ = layer(x, state[0][None] if len(state) == 1 else tuple(s[None] for s in state))
    s = state[0] if len(state) == 1 else state
    for t in range(5):
        s = step(x[t], s)
        h = s if len(state) == 1 else s[0]
        assert_rel_close(h, out[t], RTOL, f"step {t}")
    one = tuple(v[0] for v in state)  # the first batch entry, unbatched: each [H]
    got = step(x[0, 0], one[0] if len(one) == 1 else one)
    want = step(x[0], state[0] if len(state) == 1 else state)
    got, want = (got, want) if len(state) == 1 else (got[0], want[0])
    assert_rel_close(got, want[0], RTOL, "unbatched")


@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_diagnostics_unroll_and_gates(cell: Cell):
    """``unroll`` equals the layer; ``gate_trace`` reads the gates through
    ``Cell.gates`` with the record's extras, and they equal the reference's."""
    torch.manual_seed(0)
    layer = _layer(cell, 3, 4, num_layers=2, bidirectional=True, dtype=F64)
    _perturb(layer, torch.Generator().manual_seed(6))
    x = torch.randn(5, 2, 3, dtype=F64)
    with torch.no_grad():
        out, _ = layer(x)
    assert_rel_close(unroll(layer, x).output, out, RTOL, "unrolled output")
    trace = gate_trace(layer, x)
    assert tuple(trace.gates) == cell.gate_names
    forward, _ = reference.for_cell(cell)
    w = {n[:-3]: p.detach().numpy() for n, p in layer.named_parameters() if n.endswith("_l0")}
    state0 = tuple(np.zeros((2, 4)) for _ in range(cell.num_states))
    _, _, (_, _, saved) = forward(x.numpy(), state0, reference.params(cell, w))
    where = {"i": 2, "f": 3, "o": 5} if cell is LSTM_LN else {"r": 1, "z": 2}
    for name, k in where.items():
        expected = np.stack([s[k] for s in saved])
        assert_rel_close(trace.gates[name], expected, RTOL, f"gate {name}")
    assert gate_trace(layer, x, layer_index=1, direction=1).gates[cell.gate_names[0]].shape == (
        5,
        2,
        4,
    )


@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_onnx_refuses_them_and_torch_export_runs_them(cell: Cell, tmp_path):
    pytest.importorskip("onnx")
    from rnnkit.export.onnx import ExportError, Graph, cell_step, to_onnx
    from rnnkit.export.torch_export import to_torch_export

    layer = _layer(cell, 3, 4)
    x = torch.randn(4, 2, 3)
    with pytest.raises(ExportError) as error:
        to_onnx(layer, x, tmp_path / "layer.onnx")
    message = str(error.value)
    assert "\n" not in message and f"no form of the cell {cell.name!r}" in message
    assert "torch.export" in message
    with pytest.raises(ExportError, match=f"no ONNX operator for the cell {cell.name!r}"):
        cell_step(Graph("g"), "x", cell_module(cell.name, 3, 4), ("h",), hint="c")
    # the fused kernel's operator (the CPU, fp32): T and B both free
    program = to_torch_export(layer, (x,), dynamic=("TB.",))
    x2 = torch.randn(7, 3, 3)
    for got, want in zip(program.module()(x2), layer.eval()(x2), strict=True):
        torch.testing.assert_close(got, want)
    with kernels.use_backend("composite"):  # a Python loop over time: T fixed
        program = to_torch_export(layer, (x,), dynamic=(".B.",))
    x3 = torch.randn(4, 3, 3)
    for got, want in zip(program.module()(x3), layer.eval()(x3), strict=True):
        torch.testing.assert_close(got, want)


# --- bad arguments -------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: rnnkit.LSTM(3, 5, proj_size=2, layer_norm=True),
            "layer_norm=True has no proj_size form, got proj_size=2",
        ),
        (
            lambda: rnnkit.GRU(3, 5, reset_after=False, layer_norm=True),
            "layer_norm=True has the reset-after form only .* got reset_after=False",
        ),
        (
            lambda: rnnkit.nn.GRUCell(3, 5, reset_after=False, layer_norm=True),
            "layer_norm=True has the reset-after form only .* got reset_after=False",
        ),
        (
            lambda: recurrent_layer("lstm_ln", 3, 5, proj_size=2),
            "proj_size needs the lstm cell, got cell 'lstm_ln'",
        ),
        (lambda: recurrent_layer("gru_ln", 3, 0), "hidden_size must be a positive integer"),
        (lambda: cell_module("lstm_nl", 3, 5), "cell must be one of .*lstm_ln, gru_ln"),
    ],
)
def test_bad_arguments_fail_with_one_line(make, match):
    with pytest.raises(ValueError, match=match) as error:
        make()
    assert "\n" not in str(error.value)


def test_bad_states_name_the_expected_shape():
    lstm = rnnkit.LSTM(3, 5, num_layers=2, layer_norm=True)
    x = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match=r"c_0 must have shape \(2, 2, 5\), got \(2, 2, 4\)"):
        lstm(x, (torch.zeros(2, 2, 5), torch.zeros(2, 2, 4)))
    with pytest.raises(TypeError, match="the LSTM's hx must be a tuple"):
        lstm(x, torch.zeros(2, 2, 5))


# --- the fused kernel: fp32, regularisers, bf16, its operators ---------------------------


def _problem(cell: Cell, layer: RNNBase, T: int, B: int, seed: int, dtype=torch.float32):
    """x [T, B, D], initial states, lengths (one empty sequence), loss weights; drawn in
    float64 and rounded to dtype."""
    g = torch.Generator().manual_seed(seed)
    n = layer.num_layers * layer.num_directions

    def draw(*shape):
        return torch.randn(*shape, generator=g, dtype=F64).to(dtype)

    x = draw(T, B, layer.input_size)
    states = [draw(n, B, layer.hidden_size) for _ in range(cell.num_states)]
    lengths = torch.tensor([T, 0, *range(1, B - 1)][:B])
    dys = draw(T, B, layer.num_directions * layer.hidden_size)
    return x, states, lengths, dys


def _run(layer: RNNBase, x, states, lengths, dys) -> list[torch.Tensor]:
    """[output, final states, d x, d states, d every parameter] on fresh leaves."""
    x = x.clone().requires_grad_()
    states = [s.clone().requires_grad_() for s in states]
    out, final = layer(x, tuple(states) if len(states) == 2 else states[0], lengths=lengths)
    finals = final if isinstance(final, tuple) else (final,)
    loss = (out * dys).sum() + sum((f * f).sum() for f in finals)
    grads = torch.autograd.grad(loss, [x, *states, *layer.parameters()])
    return [out, *finals, *grads]


@needs_fused
@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_fp32_fused_and_composite_are_within_the_error_model(cell: Cell, one_thread):
    """Both paths within the fp32 error model's bound of the exact result (two
    bidirectional layers, lengths with an empty sequence, every tensor)."""
    layer = _layer(cell, 5, 7, num_layers=2, bidirectional=True)
    _perturb(layer, torch.Generator().manual_seed(5))
    x, states, lengths, dys = _problem(cell, layer, 9, 4, seed=6)

    def run(m):
        dtype = next(m.parameters()).dtype
        return _run(m, x.to(dtype), [s.to(dtype) for s in states], lengths, dys.to(dtype))

    truth, bounds = fp32_layer_truth(layer, run)
    for backend in ("fused", "composite"):
        with kernels.use_backend(backend):
            got = run(layer)
        for k, (a, e, bound) in enumerate(zip(got, truth, bounds, strict=True)):
            assert_fp32_close(a, e, bound, f"{cell.name} {backend} tensor #{k}")


@needs_fused
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_every_regulariser_on_the_fused_kernel_matches_the_composite_path(cell, training):
    """Recurrent dropout, weight drop, zoneout (h and c at their own rates) and variational
    dropout inside the fused kernel: float64, the same seed, equal to the composite path's
    outputs, final states and every gradient to 1e-10, in training and evaluation."""
    zoneout = (0.3, 0.5) if cell is LSTM_LN else 0.3
    rates = dict(recurrent_dropout=0.3, weight_drop=0.4, variational_dropout=0.2)
    layer = _layer(
        cell, 4, 5, num_layers=2, bidirectional=True, dtype=F64, zoneout=zoneout, **rates
    )
    _perturb(layer, torch.Generator().manual_seed(7))
    layer.train(training)
    x, states, lengths, dys = _problem(cell, layer, 7, 3, seed=8, dtype=F64)
    assert kernels.select(cell, x, noise=True) is fused.run_layer
    runs = {}
    for backend in ("composite", "fused"):
        torch.manual_seed(9)
        with kernels.use_backend(backend):
            runs[backend] = _run(layer, x, states, lengths, dys)
    for k, (a, e) in enumerate(zip(runs["fused"], runs["composite"], strict=True)):
        assert_rel_close(a, e, RTOL, f"{cell.name} tensor #{k}")


@needs_fused
@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
@pytest.mark.parametrize("native", [False, True], ids=["emulated", "native"])
def test_bf16_products_are_the_products_of_rounded_operands(cell: Cell, native: bool):
    """Under bf16 products (what bf16 autocast asks of the kernel) the forward is exactly
    the recurrence with x, W_ih, every step's h and W_hh rounded to bf16 and everything
    else exact (the composite step in float64 on those operands), to fp32 rounding: so
    the emulated products (forced here on any CPU). The native ones (a CPU with bf16
    instructions) also round each product's result to bf16, which the norms magnify by
    1/std of their row (measured 7.9e-3 relative at H = 8): within 4 bf16 roundoffs."""
    if native and not precision.bf16_native():
        pytest.skip(
            "this CPU has no bf16 instructions (precision.bf16_native): "
            "no native bf16 products to check"
        )
    g = torch.Generator().manual_seed(13)
    T, B, D, H = 8, 3, 6, 8
    G = cell.num_gates * H

    def draw(*shape, scale=1.0, shift=0.0):
        return shift + scale * torch.randn(*shape, generator=g)

    x, w_ih, w_hh = draw(T, B, D), draw(G, D, scale=0.4), draw(G, H, scale=0.4)
    extra = [
        draw(G, scale=0.1),
        draw(G, scale=0.1),
        draw(G, scale=0.3, shift=1.0),
        draw(G, scale=0.3, shift=1.0),
    ]
    if cell is LSTM_LN:
        extra += [draw(H, scale=0.3, shift=1.0), draw(H, scale=0.1)]
    state = tuple(draw(B, H) for _ in range(cell.num_states))
    precision.set_bf16_native(native)
    try:
        with reduced_products(torch.bfloat16):
            out, _ = fused.run_layer(cell, x, None, [state], [(w_ih, w_hh, None, None, *extra)])
    finally:
        precision.set_bf16_native(None)

    def rounded(t):
        return t.to(torch.bfloat16).double()

    gx = torch.nn.functional.linear(rounded(x), rounded(w_ih))  # [T, B, G]
    s, params, outs = tuple(t.double() for t in state), [t.double() for t in extra], []
    for t in range(T):
        s = cell.step(gx[t], s, rounded(w_hh), None, *params, h_in=rounded(s[0]))
        outs.append(s[0])
    bound = 4 * 2.0**-8 if native else 1e-5
    assert_rel_close(out, torch.stack(outs), bound, f"{cell.name} bf16 products")


@needs_fused
@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_bf16_autocast_trains_within_the_bound_and_changes_the_products(cell, one_thread):
    """Under bf16 autocast: outputs and every gradient within 16 bf16 roundoffs
    (normwise) of the fp32 run, and not equal to it. (Twice the plain cells' bound of
    tests/test_autocast.py: each norm divides by its row's standard deviation, which
    magnifies the products' rounding; measured up to 3.7% at H = 32 and 10% at H = 8.)"""
    layer = _layer(cell, 16, 32, num_layers=2, bidirectional=True)
    _perturb(layer, torch.Generator().manual_seed(10))
    x, states, lengths, dys = _problem(cell, layer, 8, 3, seed=11)
    results = []
    for autocast in (True, False):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            results.append(_run(layer, x, states, lengths, dys))
    for k, (got, ref) in enumerate(zip(*results, strict=True)):
        error = float((got.detach().double() - ref.detach().double()).norm())
        assert error <= 16 * 2.0**-8 * float(ref.detach().double().norm()) + 1e-6, (k, error)
    assert not torch.equal(results[0][0].float(), results[1][0])


@needs_fused
@pytest.mark.parametrize("lengths", [None, [4, 0, 2]], ids=["full", "lengths"])
@pytest.mark.parametrize("cell", LN_CELLS, ids=lambda c: c.name)
def test_the_layer_operator_passes_opcheck_with_the_norms(cell: Cell, lengths):
    """``rnnkit::fused_layer`` with the norms' list: schema, fake shapes (the norm buffer
    included), autograd registration and, with full rows, AOTAutograd's trace; and
    ``rnnkit::fused_layer_backward``'s."""
    g = torch.Generator().manual_seed(12)
    G, H, D, T, B = cell.num_gates * 4, 4, 3, 4, 3

    def leaf(*shape):
        return (torch.randn(*shape, generator=g, dtype=F64) / 2).requires_grad_()

    dirs = 2
    norms = []
    for _ in range(dirs):
        lstm = cell is LSTM_LN
        norms += [leaf(G), leaf(G), leaf(H) if lstm else torch.empty(0, dtype=F64)]
        norms += [leaf(H) if lstm else torch.empty(0, dtype=F64)]
    args = (
        ops.CELL_CODES[cell.name],
        leaf(T, B, D),
        None if lengths is None else torch.tensor(lengths),
        [leaf(B, H) for _ in range(dirs)],
        [leaf(B, H) for _ in range(dirs)] if cell is LSTM_LN else [],
        [leaf(G, D) for _ in range(dirs)],
        [leaf(G, H) for _ in range(dirs)],
        [leaf(G) for _ in range(dirs)],
        [leaf(G) for _ in range(dirs)],
        norms,
        [],
        True,
        False,
    )
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if lengths is None:
        utils += ("test_aot_dispatch_dynamic",)
    torch.library.opcheck(ops.fused_layer, args, test_utils=utils)
