"""The recurrent regularisers (``rnnkit.nn.noise``; docs/cells.md, "Regularisers"):
recurrent dropout, weight drop, zoneout and variational (locked) dropout.

The NumPy reference's BPTT through the masks against finite differences; the layers
(composite path) against the reference stack with the very masks the layer drew, forward
and every gradient, over the registry's cells, depths, directions, length modes and the
LSTM's projection, in training and evaluation; the structure of the masks (per sequence,
per step, per direction); evaluation; seeds and RNG restore; weight drop's gradient; the
kernel interface and dispatch; streaming; export; argument checks.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

import rnnkit
from helpers import TOLERANCE, assert_rel_close, rnnkit_class
from registry import (
    FUSED_CELLS,
    RECURRENT_FUSED_CELLS,
    B,
    D,
    H,
    LayerConfig,
    T,
    layer_configs,
    sample_lengths,
)
from rnnkit.nn import kernels, noise, reference, runner
from rnnkit.nn.cells import CELLS, lstm_cell
from rnnkit.train import checkpoint

P = 4  # proj_size
RATES = {"recurrent_dropout": 0.3, "weight_drop": 0.4, "variational_dropout": 0.25}
F64 = TOLERANCE[torch.float64]


def _rates(cell: str, **changes) -> dict:
    """All four regularisers on; the LSTM's h and c zone out at different rates."""
    return RATES | {"zoneout": (0.3, 0.5) if cell == "lstm" else 0.3} | changes


def _layer(config: LayerConfig, seed: int = 0, **rates):
    torch.manual_seed(seed)
    return rnnkit_class(config.cell)(D, H, **config.layer_kwargs(), **rates)


# --- the reference's hand-written BPTT through the masks -------------------------------

# the classic cells (minGRU/minLSTM have no recurrent product to mask, and the reference
# has no zoneout for them: their fused zoneout is tested against the composite path in
# tests/test_min_cells.py)
REF_CELLS = [CELLS[name] for name in RECURRENT_FUSED_CELLS] + [lstm_cell(3)]


@pytest.mark.parametrize("cell", REF_CELLS, ids=lambda c: c.label.replace(" ", "-"))
def test_reference_backward_through_the_masks_matches_finite_differences(cell):
    """Masks of any real values (training's 0 and 1/(1-p), evaluation's constant p) enter
    the hand-written BPTT exactly: every gradient against central differences."""
    Tr, Br, Dr, Hr, eps = 4, 2, 3, 5, 1e-6
    R = cell.proj_size or Hr
    rng = np.random.default_rng(len(cell.label))
    G = cell.num_gates * Hr
    params = reference.Params(
        w_ih=rng.normal(0, 0.6, (G, Dr)),
        w_hh=rng.normal(0, 0.6, (G, R)),
        b_ih=rng.normal(0, 0.3, G),
        b_hh=rng.normal(0, 0.3, G),
        w_hr=rng.normal(0, 0.6, (R, Hr)) if cell.proj_size else None,
    )
    sizes = cell.state_sizes(Hr)
    x = rng.normal(size=(Tr, Br, Dr))
    state0 = tuple(rng.normal(size=(Br, n)) for n in sizes)
    dys = rng.normal(size=(Tr, Br, R))
    dfinal = tuple(rng.normal(size=(Br, n)) for n in sizes)
    mask = rng.uniform(0, 2, (Br, R))
    zoneout = tuple(rng.uniform(0, 1, (Tr, Br, n)) for n in sizes)
    forward, backward = reference.for_cell(cell)
    forward = functools.partial(forward, recurrent_mask=mask, zoneout=zoneout)
    _, _, cache = forward(x, state0, params)
    grads = backward(cache, dys, dfinal)

    def loss() -> float:
        ys, final, _ = forward(x, state0, params)
        return float(
            (ys * dys).sum() + sum((f * d).sum() for f, d in zip(final, dfinal, strict=True))
        )

    checks = {name: (getattr(params, name), getattr(grads, name)) for name in ("w_ih", "w_hh")}
    checks |= {name: (getattr(params, name), getattr(grads, name)) for name in ("b_ih", "b_hh")}
    checks["x"] = (x, grads.x)
    if cell.proj_size:
        checks["w_hr"] = (params.w_hr, grads.w_hr)
    for k, (s, g) in enumerate(zip(state0, grads.state0, strict=True)):
        checks[f"state0[{k}]"] = (s, g)
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


def test_reference_without_masks_is_unchanged_by_ones_and_zeros():
    """m = 1 and k = 0 are no regularisation: the same results as no masks at all."""
    rng = np.random.default_rng(0)
    for cell in REF_CELLS:
        forward, _ = reference.for_cell(cell)
        R, G = cell.proj_size or H, cell.num_gates * H
        params = reference.Params(
            rng.normal(size=(G, D)),
            rng.normal(size=(G, R)),
            None,
            None,
            rng.normal(size=(R, H)) if cell.proj_size else None,
        )
        x = rng.normal(size=(T, B, D))
        state0 = tuple(rng.normal(size=(B, n)) for n in cell.state_sizes(H))
        plain, _, _ = forward(x, state0, params)
        zeros = tuple(np.zeros((T, B, n)) for n in cell.state_sizes(H))
        masked, _, _ = forward(x, state0, params, recurrent_mask=np.ones((B, R)), zoneout=zeros)
        np.testing.assert_array_equal(plain, masked, err_msg=cell.label)


# --- the layer against the reference stack, with the masks the layer drew -------------

_KINDS = {"weight_ih": "w_ih", "weight_hh": "w_hh", "bias_ih": "b_ih", "bias_hh": "b_hh"}


def _np(t):
    return None if t is None else t.detach().numpy()


def reference_stack(layer, drawn, x, state0, lengths, dys, dfinal):
    """The layer's forward and backward in the NumPy reference (float64), with the masks
    ``drawn`` (``noise.StackNoise``), each sequence on its own (its own length; the reverse
    direction from its own end) and the gradients summed over sequences.

    x [T, B, D], state0/dfinal: per state [n, B, size], dys [T, B, dirs*R] ->
    (out, finals per state, {parameter name: gradient}, dx, dstate0 per state)."""
    forward, backward = reference.for_cell(layer.cell)
    dirs, R = layer.num_directions, layer.output_size
    out = np.zeros((x.shape[0], x.shape[1], dirs * R))
    finals = [s.copy() for s in state0]
    dstate0 = [np.zeros_like(s) for s in state0]
    dx = np.zeros_like(x)
    grads = {name: np.zeros(tuple(p.shape)) for name, p in layer.named_parameters()}

    def cut(mask, b):  # a mask's rows of sequence b, as an array (None stays None)
        return None if mask is None else _np(mask)[b : b + 1]

    for b, L in enumerate(lengths):
        inp, caches = x[:L, b : b + 1], []
        for layer_index in range(layer.num_layers):
            m_in = cut(drawn.inputs[layer_index], b)
            inp = inp if m_in is None else inp * m_in  # [L, 1, D_l] * [1, D_l]
            outs = []
            for d in range(dirs):
                k = layer_index * dirs + d
                w_ih, w_hh, b_ih, b_hh, *extra = layer._direction_weights(layer_index, d)
                w_mask = drawn.weight_hh[layer_index][d]
                w_hh = w_hh if w_mask is None else w_hh * w_mask
                params = reference.Params(*map(_np, (w_ih, w_hh, b_ih, b_hh, *extra)))
                step = None if drawn.steps[layer_index] is None else drawn.steps[layer_index][d]
                options: dict = {}
                if step is not None and step.recurrent is not None:
                    options["recurrent_mask"] = cut(step.recurrent, b)
                if step is not None and step.zoneout is not None:
                    options["zoneout"] = tuple(
                        None if z is None else _np(z)[:L, b : b + 1][:: 1 if d == 0 else -1]
                        for z in step.zoneout
                    )
                seq = inp if d == 0 else inp[::-1]
                s0 = tuple(s[k, b : b + 1] for s in state0)
                ys, final, cache = forward(seq, s0, params, **options)
                outs.append(ys if d == 0 else ys[::-1])
                caches.append((cache, w_mask))
                for s, f in enumerate(final):
                    finals[s][k, b] = f[0]
            inp = np.concatenate(outs, axis=2)
        m_out = cut(drawn.output, b)
        out[:L, b : b + 1] = inp if m_out is None else inp * m_out

        dout = dys[:L, b : b + 1] if m_out is None else dys[:L, b : b + 1] * m_out
        for layer_index in reversed(range(layer.num_layers)):
            dinp = 0.0
            for d in range(dirs):
                k = layer_index * dirs + d
                cache, w_mask = caches[k]
                dy = dout[..., d * R : (d + 1) * R]
                df = tuple(s[k, b : b + 1] for s in dfinal)
                g = backward(cache, dy if d == 0 else dy[::-1], df)
                dinp = dinp + (g.x if d == 0 else g.x[::-1])
                for s, ds in enumerate(g.state0):
                    dstate0[s][k, b] += ds[0]
                for kind, name in layer._weight_names[layer_index][d]:
                    grad = getattr(g, _KINDS.get(kind, "w_hr"))
                    if kind == "weight_hh" and w_mask is not None:
                        grad = grad * _np(w_mask)  # DropConnect: d weight = mask * d dropped
                    grads[name] += grad
            m_in = cut(drawn.inputs[layer_index], b)
            dout = dinp if m_in is None else dinp * m_in
        dx[:L, b : b + 1] = dout
    return out, finals, grads, dx, dstate0


def _stack_configs() -> list[LayerConfig]:
    configs = [
        c
        for c in layer_configs(RECURRENT_FUSED_CELLS, num_layers=(1, 2), dtypes=(torch.float64,))
        if not c.batch_first and c.bias == c.initial_state
    ]
    return configs + [dataclasses.replace(c, proj_size=P) for c in configs if c.cell == "lstm"]


@pytest.mark.parametrize("backend", ["composite", "fused"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("config", _stack_configs(), ids=lambda c: c.id)
def test_layer_with_all_regularisers_matches_the_reference(config: LayerConfig, training, backend):
    """Outputs, final states and the gradients of x, the initial states and every
    parameter, in float64 to 1e-10; in evaluation only zoneout's expectation remains. On
    the composite path (autograd through the masks) and on the fused kernel (its own
    backward through them), the projected LSTM's included."""
    layer = _layer(config, **_rates(config.cell))
    layer.train(training)
    probe = torch.empty(T, B, D, dtype=torch.float64)
    if backend == "fused" and kernels.select(layer.cell, probe, noise=True) is runner.run_layer:
        pytest.skip(f"no fused kernel for {layer.cell.label} (or it does not build here)")
    g = torch.Generator().manual_seed(3)
    n, R = config.num_layers * layer.num_directions, layer.output_size
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64, requires_grad=True)
    states = [
        torch.randn(n, B, size, generator=g, dtype=torch.float64, requires_grad=True)
        for size in layer.state_sizes
    ]
    if not config.initial_state:
        states = [torch.zeros_like(s) for s in states]
    lengths = sample_lengths(g) if config.lengths != "full" else torch.full((B,), T)
    dys = torch.randn(T, B, layer.num_directions * R, generator=g, dtype=torch.float64)
    dfinal = [torch.randn(s.shape, generator=g, dtype=torch.float64) for s in states]

    torch.manual_seed(11)
    drawn = layer._draw_noise(x)
    assert drawn is not None and (training or drawn.steps[0] is not None)
    torch.manual_seed(11)
    hx = (tuple(states) if len(states) == 2 else states[0]) if config.initial_state else None
    with rnnkit.use_backend(backend):
        if config.lengths == "packed":
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            out, final = layer(packed, hx)
            out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
        else:
            out, final = layer(x, hx, lengths=lengths if config.lengths == "padded" else None)
    finals = final if isinstance(final, tuple) else (final,)
    loss = (out * dys).sum() + sum((f * df).sum() for f, df in zip(finals, dfinal, strict=True))
    leaves = [x, *(states if config.initial_state else []), *layer.parameters()]
    actual = torch.autograd.grad(loss, leaves)

    ref_out, ref_finals, ref_grads, ref_dx, ref_dstate0 = reference_stack(
        layer,
        drawn,
        x.detach().numpy(),
        [s.detach().numpy() for s in states],
        lengths.tolist(),
        dys.numpy(),
        [d.numpy() for d in dfinal],
    )
    assert_rel_close(out, ref_out, F64, "output")
    for s, (f, e) in enumerate(zip(finals, ref_finals, strict=True)):
        assert_rel_close(f, e, F64, f"final state {s}")
    expected = [ref_dx, *(ref_dstate0 if config.initial_state else [])]
    expected += [ref_grads[name] for name, _ in layer.named_parameters()]
    names = ["d input", *(f"d state {s}" for s in range(len(states) * config.initial_state))]
    names += [f"d {name}" for name, _ in layer.named_parameters()]
    for name, a, e in zip(names, actual, expected, strict=True):
        assert_rel_close(a, e, F64, name)


# --- evaluation -------------------------------------------------------------------------

ALL = [*RECURRENT_FUSED_CELLS, "lstm_proj"]  # every regulariser applies to these


def _config(cell: str, **changes) -> LayerConfig:
    base = LayerConfig(
        "lstm" if cell == "lstm_proj" else cell,
        num_layers=2,
        bidirectional=True,
        batch_first=False,
        bias=True,
        lengths="padded",
        initial_state=False,
        dtype=torch.float64,
        proj_size=P if cell == "lstm_proj" else 0,
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("cell", ALL)
def test_dropout_likes_are_exactly_the_identity_in_evaluation(cell):
    """recurrent_dropout, weight_drop, variational_dropout (and torch's dropout) off in
    evaluation: bit for bit the layer without them, outputs and gradients, on whichever
    kernel the layer picks; nothing is drawn."""
    config = _config(cell)
    plain = _layer(config)
    regularised = _layer(config, dropout=0.5, **RATES).eval()
    regularised.load_state_dict(plain.state_dict())
    plain.eval()
    x = torch.randn(T, B, D, dtype=torch.float64)
    lengths = sample_lengths(torch.Generator().manual_seed(0))
    assert regularised._draw_noise(x) is None
    results = []
    for layer in (plain, regularised):
        before = torch.get_rng_state()
        out, _ = layer(x, lengths=lengths)
        assert torch.equal(torch.get_rng_state(), before), "evaluation drew random numbers"
        results.append([out, *torch.autograd.grad(out.sum(), list(layer.parameters()))])
    for a, e in zip(*results, strict=True):
        assert torch.equal(a, e)


TORCH_CELLS = {"rnn_tanh": torch.nn.RNNCell, "gru": torch.nn.GRUCell, "lstm": torch.nn.LSTMCell}


@pytest.mark.parametrize("cell", list(TORCH_CELLS))
def test_zoneout_in_evaluation_is_its_expectation(cell):
    """s_t = p s_{t-1} + (1 - p) s_new, against a loop over torch.nn's own cell."""
    rates = (0.2, 0.6) if cell == "lstm" else (0.3,)
    layer = _layer(_config(cell, num_layers=1, bidirectional=False), zoneout=rates).eval()
    torch_cell = TORCH_CELLS[cell](D, H, dtype=torch.float64)
    torch_cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    state0 = tuple(torch.randn(B, H, generator=g, dtype=torch.float64) for _ in rates)
    state, expected = state0, []
    with torch.no_grad():
        for x_t in x:
            new = torch_cell(x_t, state if cell == "lstm" else state[0])
            new = new if isinstance(new, tuple) else (new,)
            state = tuple(p * s + (1 - p) * n for p, s, n in zip(rates, state, new, strict=True))
            expected.append(state[0])
        hx = tuple(s[None] for s in state0) if cell == "lstm" else state0[0][None]
        out, final = layer(x, hx)
    assert_rel_close(out, torch.stack(expected), F64, "zoneout's expectation")
    for f, e in zip(final if cell == "lstm" else (final,), state, strict=True):
        assert_rel_close(f[0], e, F64, "final state")


# --- the structure of the masks ---------------------------------------------------------


def _drawn(layer, x, seed: int):
    """The masks the layer's next call on x draws after ``torch.manual_seed(seed)``; the
    seed is set again, so that call draws the same."""
    torch.manual_seed(seed)
    drawn = layer._draw_noise(x)
    torch.manual_seed(seed)
    return drawn


@pytest.mark.parametrize("cell", ALL)
def test_recurrent_dropout_drops_a_unit_from_every_steps_recurrent_product(cell):
    """One mask per sequence, the same at every step: for sequence b, a dropped unit j of
    h never reaches W_hh, so the gradient of b's outputs w.r.t. the column weight_hh[:, j]
    is exactly zero, a kept unit's is not; h itself (the output) is not masked."""
    layer = _layer(_config(cell, num_layers=1, bidirectional=False), recurrent_dropout=0.5)
    x = torch.randn(T, B, D, dtype=torch.float64)
    mask = _drawn(layer, x, seed=5).steps[0][0].recurrent  # [B, R]
    assert mask is not None and set(mask.unique().tolist()) == {0.0, 2.0}
    out, _ = layer(x)
    for b in range(B):
        (grad,) = torch.autograd.grad(out[:, b].sum(), layer.weight_hh_l0, retain_graph=True)
        dropped = mask[b] == 0
        assert dropped.any() and (~dropped).any(), "the seed should drop some units, not all"
        assert not grad[:, dropped].any(), f"sequence {b}: a dropped unit reached W_hh"
        kept = grad[:, ~dropped].abs().sum(0)  # (a ReLU unit may be inactive throughout)
        assert kept.gt(0).all() if cell != "rnn_relu" else kept.gt(0).any()
        assert out[:, b][:, dropped].any(), "the output must not be masked"


@pytest.mark.parametrize("cell", [*FUSED_CELLS, "lstm_proj"])
def test_zoneout_in_training_holds_each_zoned_unit_for_that_step(cell):
    """Where k_t = 1 a unit of h keeps its previous value exactly (forward: h_{t-1};
    reverse: h_{t+1}), elsewhere it moves; k is fresh at every step and each direction
    has its own."""
    layer = _layer(_config(cell, num_layers=1), zoneout=0.5)
    R = layer.output_size
    g = torch.Generator().manual_seed(6)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    hx = [torch.randn(2, B, size, generator=g, dtype=torch.float64) for size in layer.state_sizes]
    steps = _drawn(layer, x, seed=6).steps[0]
    out, _ = layer(x, tuple(hx) if len(hx) == 2 else hx[0])
    for d, order in ((0, range(T)), (1, range(T - 1, -1, -1))):
        k = steps[d].zoneout[0]  # [T, B, R]: h's keep-mask
        previous = hx[0][d]
        assert any(not torch.equal(k[t], k[0]) for t in range(T)), "one mask for every step"
        for t in order:
            h = out[t, :, d * R : (d + 1) * R]
            kept = k[t] == 1
            assert torch.equal(h[kept], previous[kept])
            moved = h[~kept] != previous[~kept]  # (an inactive ReLU unit stays at 0)
            assert moved.all() if cell != "rnn_relu" else moved.any()
            previous = h
    assert not torch.equal(steps[0].zoneout[0], steps[1].zoneout[0]), "one mask per direction"


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_variational_dropout_has_one_mask_per_sequence_on_inputs_and_output(cell):
    """A dropped output feature is zero at every step and no other is; a dropped input
    feature gets no gradient at any step; layer 1's input mask is its own."""
    layer = _layer(_config(cell), variational_dropout=0.5)
    x = torch.randn(T, B, D, dtype=torch.float64, requires_grad=True)
    drawn = _drawn(layer, x, seed=7)
    out, _ = layer(x)
    (dx,) = torch.autograd.grad(out.sum(), x)
    for t in range(T):
        assert torch.equal(out[t] == 0, drawn.output == 0)
        assert torch.equal(dx[t] == 0, drawn.inputs[0] == 0)
    assert drawn.inputs[1].shape == (B, 2 * H) and drawn.output.shape == (B, 2 * H)
    assert not torch.equal(drawn.inputs[1], drawn.output)


def test_each_layer_and_direction_draws_its_own_masks():
    layer = _layer(_config("lstm"), **_rates("lstm"))
    drawn = _drawn(layer, torch.randn(T, B, D, dtype=torch.float64), seed=8)
    steps = [s for layer_steps in drawn.steps for s in layer_steps]
    weights = [w for layer_weights in drawn.weight_hh for w in layer_weights]
    for i in range(len(steps)):
        for j in range(i):
            assert not torch.equal(steps[i].recurrent, steps[j].recurrent)
            assert not torch.equal(weights[i], weights[j])
            for a, b in zip(steps[i].zoneout, steps[j].zoneout, strict=True):
                assert not torch.equal(a, b)
    assert [z.shape for z in steps[0].zoneout] == [(T, B, H), (T, B, H)]
    assert weights[0].shape == layer.weight_hh_l0.shape


# --- weight drop --------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ALL)
def test_weight_drop_leaves_the_parameter_and_its_gradient_is_a_manual_dropconnect(cell):
    """The layer runs with mask * weight_hh (a new tensor; one mask per call), never
    writes the parameter, and the parameter's gradient is the mask times the gradient of
    a plain layer run on that dropped weight (torch.func.functional_call); on the kernel
    the layer picks (the fused one where it applies)."""
    config = _config(cell)
    layer = _layer(config, weight_drop=0.5)
    plain = _layer(config)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    lengths = sample_lengths(g)
    before = {n: (p.detach().clone(), p._version) for n, p in layer.named_parameters()}
    drawn = _drawn(layer, x, seed=9)
    out, _ = layer(x, lengths=lengths)
    weights = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((out * weights).sum(), list(layer.parameters()))
    for name, p in layer.named_parameters():
        assert torch.equal(p, before[name][0]) and p._version == before[name][1], name

    masks = {}
    for layer_index, names in enumerate(layer._weight_names):
        for d, kinds in enumerate(names):
            masks[dict(kinds)["weight_hh"]] = drawn.weight_hh[layer_index][d]
    leaves = {
        n: (p.detach() * masks[n] if n in masks else p.detach()).requires_grad_()
        for n, p in plain.named_parameters()
    }
    manual, _ = torch.func.functional_call(plain, leaves, (x,), {"lengths": lengths})
    assert_rel_close(out, manual, F64, "output")
    manual_grads = torch.autograd.grad((manual * weights).sum(), list(leaves.values()))
    for name, a, e in zip(leaves, grads, manual_grads, strict=True):
        assert_rel_close(a, e * masks[name] if name in masks else e, F64, f"d {name}")
    again, _ = layer(x, lengths=lengths)
    assert not torch.equal(again, out), "each call draws a new weight mask"


# --- seeds and resume ---------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_same_seed_or_a_restored_rng_state_replays_every_mask(cell):
    """Two calls after torch.manual_seed(s) draw the same masks (outputs and gradients
    bit for bit), another seed others; the trainer's checkpointed RNG state (through
    safetensors, as a checkpoint stores it) replays them after other draws."""
    from safetensors.torch import load, save

    layer = _layer(_config(cell), dropout=0.3, **_rates(cell))
    g = torch.Generator().manual_seed(10)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    lengths = sample_lengths(g)

    def run() -> list[torch.Tensor]:
        out, final = layer(x, lengths=lengths)
        finals = final if isinstance(final, tuple) else (final,)
        loss = out.square().sum() + sum(f.sum() for f in finals)
        return [out, *finals, *torch.autograd.grad(loss, list(layer.parameters()))]

    def same(a, b) -> bool:
        return all(torch.equal(u, v) for u, v in zip(a, b, strict=True))

    torch.manual_seed(4)
    first = run()
    torch.manual_seed(4)
    assert same(first, run())
    torch.manual_seed(5)
    assert not same(first, run())
    saved = load(save(checkpoint.rng_tensors()))
    resumed = run()
    torch.rand(100)
    run()
    checkpoint.restore_rng(saved)
    assert same(resumed, run())


# --- arguments ----------------------------------------------------------------------------

BAD = [-0.1, 1.0, 1.5, True, "0.1", None]
CLASSES = [rnnkit.RNN, rnnkit.GRU, rnnkit.LSTM]


@pytest.mark.parametrize("value", BAD, ids=repr)
@pytest.mark.parametrize("name", ["recurrent_dropout", "weight_drop", "variational_dropout"])
def test_a_bad_rate_is_one_error_naming_it(name, value):
    for cls in CLASSES:
        with pytest.raises(ValueError) as error:
            cls(D, H, **{name: value})
        assert str(error.value) == f"{name} must be a number in [0, 1), got {value!r}"


@pytest.mark.parametrize(
    "cls, value, message",
    [
        (rnnkit.LSTM, 1.0, "zoneout must be a number in [0, 1) or a tuple (p_h, p_c) of them"),
        (rnnkit.LSTM, (0.1, 0.2, 0.3), "zoneout must be a number in [0, 1) or a tuple (p_h, p_c)"),
        (rnnkit.LSTM, (0.1, 1.0), "zoneout must be a number in [0, 1) or a tuple (p_h, p_c)"),
        (rnnkit.LSTM, "0.1", "zoneout must be a number in [0, 1) or a tuple (p_h, p_c)"),
        (rnnkit.GRU, (0.1, 0.2), "zoneout must be a number in [0, 1), got"),
        (rnnkit.RNN, -0.5, "zoneout must be a number in [0, 1), got"),
        (rnnkit.GRU, True, "zoneout must be a number in [0, 1), got"),
    ],
)
def test_a_bad_zoneout_is_one_error_naming_it(cls, value, message):
    with pytest.raises(ValueError) as error:
        cls(D, H, zoneout=value)
    assert str(error.value).startswith(message) and str(error.value).endswith(f"got {value!r}")


def test_zoneout_takes_a_rate_for_every_state_or_one_per_state():
    assert rnnkit.LSTM(D, H, zoneout=(0.1, 0.2)).zoneout == (0.1, 0.2)
    assert rnnkit.LSTM(D, H, zoneout=0.1).zoneout == (0.1, 0.1)
    assert rnnkit.GRU(D, H, zoneout=[0.1]).zoneout == (0.1,)
    assert rnnkit.RNN(D, H).zoneout == (0.0,)
    assert "zoneout=(0.1, 0.2)" in repr(rnnkit.LSTM(D, H, zoneout=(0.1, 0.2)))


def test_torch_nn_arguments_keep_their_places_and_the_regularisers_are_keywords():
    lstm = rnnkit.LSTM(D, H, 2, True, False, 0.5, True, 3)  # torch.nn.LSTM's order
    assert (lstm.num_layers, lstm.dropout, lstm.bidirectional, lstm.proj_size) == (2, 0.5, True, 3)
    with pytest.raises(TypeError):
        rnnkit.RNN(D, H, 1, "tanh", True, False, 0.0, False, None, None, 0.3)


# --- the kernel interface -----------------------------------------------------------------


def test_per_step_noise_goes_to_a_kernel_that_takes_it_or_to_the_composite_path():
    """``select(..., noise=True)`` skips kernels without ``Kernel.noise`` (one forced by
    name says why); a kernel with it receives one StepNoise per direction, and a layer
    whose noise needs no kernel support (weight drop, locked dropout) calls it without."""
    x = torch.randn(T, B, D)
    gru = CELLS["gru"]

    def noiseless(cell, x, lengths, states, weights):
        return runner.run_layer(cell, x, lengths, states, weights)

    plain = kernels.Kernel("plain", lambda cell, x: True, noiseless)  # tried first
    layer = rnnkit.GRU(D, H, bidirectional=True, recurrent_dropout=0.3)
    kernels.register(plain)
    try:
        assert kernels.select(gru, x) is noiseless
        assert kernels.select(gru, x, noise=True) is not noiseless
        with rnnkit.use_backend("plain"), pytest.raises(RuntimeError) as error:
            layer(x)
    finally:
        kernels._kernels.remove(plain)
    assert "with recurrent dropout or zoneout" in str(error.value)

    calls: list = []

    def spy(cell, x, lengths, states, weights, noise=None):
        calls.append(noise)
        return runner.run_layer(cell, x, lengths, states, weights, noise)

    kernel = kernels.Kernel("spy", lambda cell, x: True, spy, noise=True)
    kernels.register(kernel)
    try:
        layer(x)
        (received,) = calls
        assert [type(n) for n in received] == [noise.StepNoise] * 2
        assert [n.recurrent.shape for n in received] == [(B, H)] * 2
        rnnkit.GRU(D, H, weight_drop=0.3, variational_dropout=0.3)(x)
        assert calls[-1] is None
    finally:
        kernels._kernels.remove(kernel)


@pytest.mark.parametrize("cell", ["rnn_relu", "gru_reset_before", "lstm"])
def test_weight_drop_and_locked_dropout_run_on_the_fused_kernel(cell):
    """They need no kernel support: forced "fused" trains with them, equal (float64) to
    the composite path with the same seed, outputs and every gradient."""
    config = _config(cell)
    layer = _layer(config, weight_drop=0.4, variational_dropout=0.3, dropout=0.2)
    x = torch.randn(T, B, D, dtype=torch.float64, requires_grad=True)
    lengths = sample_lengths(torch.Generator().manual_seed(1))
    if kernels.select(layer.cell, x) is runner.run_layer:
        pytest.skip("the fused kernel does not build here")
    results = []
    for backend in ("fused", "composite"):
        torch.manual_seed(12)
        with rnnkit.use_backend(backend):
            out, _ = layer(x, lengths=lengths)
        results.append([out, *torch.autograd.grad(out.square().sum(), [x, *layer.parameters()])])
    for k, (a, e) in enumerate(zip(*results, strict=True)):
        assert_rel_close(a, e, F64, f"result {k}")


# --- streaming ----------------------------------------------------------------------------


def test_streaming_steps_without_zoneout_and_falls_back_with_it():
    """T = 1 without grad: the fast path declines zoneout (whose expectation changes the
    step) and any training noise, and still serves a regularised layer in evaluation."""
    g = torch.Generator().manual_seed(13)
    x1 = torch.randn(1, B, D, generator=g, dtype=torch.float64)
    hx = tuple(torch.randn(2, B, H, generator=g, dtype=torch.float64) for _ in range(2))
    torch.manual_seed(0)
    plain = rnnkit.LSTM(D, H, 2, dtype=torch.float64).eval()
    zoned = rnnkit.LSTM(D, H, 2, dtype=torch.float64, zoneout=(0.25, 0.5)).eval()
    dropped = rnnkit.LSTM(D, H, 2, dtype=torch.float64, **RATES).eval()
    for layer in (zoned, dropped):
        layer.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert zoned._stream_step(x1, hx) is None
        _, (h, c) = zoned(x1, hx)
        first = rnnkit.LSTM(D, H, dtype=torch.float64)  # layer 0 of plain, alone
        first.load_state_dict({k: v for k, v in plain.state_dict().items() if "_l0" in k})
        _, (h_new, c_new) = first(x1, (hx[0][:1], hx[1][:1]))
        assert_rel_close(h[0], 0.25 * hx[0][0] + 0.75 * h_new[0], F64, "h of layer 0")
        assert_rel_close(c[0], 0.5 * hx[1][0] + 0.5 * c_new[0], F64, "c of layer 0")
        general = dropped(x1, hx, lengths=torch.ones(B, dtype=torch.long))
        if kernels.select_step(dropped.cell, x1) is not None:
            assert dropped._stream_step(x1, hx) is not None
        streamed = dropped(x1, hx)
        for a, e in zip((streamed[0], *streamed[1]), (general[0], *general[1]), strict=True):
            assert_rel_close(a, e, F64, "streamed")
        assert dropped.train()._stream_step(x1, hx) is None


# --- export -------------------------------------------------------------------------------


def test_onnx_refuses_zoneout_in_one_line_and_exports_the_dropout_likes():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from rnnkit.export import onnx as export

    x = torch.randn(T, B, D)
    with pytest.raises(export.ExportError) as error:
        export.onnx_model(rnnkit.GRU(D, H, zoneout=0.1).eval(), {"input": x})
    message = str(error.value)
    assert "\n" not in message and "zoneout=(0.1,)" in message and "torch.export" in message

    torch.manual_seed(0)
    layer = rnnkit.LSTM(D, H, 2, bidirectional=True, dropout=0.2, **RATES).eval()
    model = export.onnx_model(layer, {"input": x})
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        out, (h, c) = layer(x)
    for a, e in zip(got, (out, h, c), strict=True):
        np.testing.assert_allclose(a, e.numpy(), rtol=1e-5, atol=1e-6)


def test_torch_export_runs_zoneout_with_a_fixed_T_and_the_dropout_likes_as_today():
    from rnnkit.export import to_torch_export

    x, wider = torch.randn(T, B, D), torch.randn(T, 2 * B, D)
    zoned = rnnkit.GRU(D, H, bidirectional=True, zoneout=0.2).eval()
    program = to_torch_export(zoned, (x,), dynamic=(".B.",))  # composite: T fixed
    with torch.no_grad():
        expected = zoned(wider)
    for a, e in zip(program.module()(wider), expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)

    dropped = rnnkit.GRU(D, H, bidirectional=True, **RATES).eval()
    program = to_torch_export(dropped, (x,))
    if kernels.select(dropped.cell, x) is not runner.run_layer:
        assert "rnnkit.fused_layer" in str(program.graph)
    longer = torch.randn(T + 3, B, D)
    with torch.no_grad():
        expected = dropped(longer)
    for a, e in zip(program.module()(longer), expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
