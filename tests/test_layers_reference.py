"""Every layer configuration, all five cells (including the reset-before GRU that torch
lacks), against the NumPy reference composed layer by layer and direction by direction;
and variable-length batches against each sequence run on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import TOLERANCE, assert_fp32_close, assert_rel_close, fp32_layer_truth, rnnkit_class
from registry import B, D, H, LayerConfig, T, layer_configs, make_layer, sample_lengths
from rnnkit.nn import reference


def reference_stack(layer, x: np.ndarray, state0: list[tuple], dys: np.ndarray, dfinal: list):
    """Forward and backward of a whole layer stack in the NumPy reference (float64).

    x [T, B, D]; state0/dfinal: one state tuple per layer-direction. The reverse direction
    is the forward recurrence on the time-reversed sequence.
    """
    forward, backward = reference.for_cell(layer.cell)
    dirs = layer.num_directions
    weights = [  # (w_ih, w_hh, b_ih, b_hh) per layer-direction, None where a cell has none
        [None if w is None else w.detach().double().numpy() for w in layer._direction_weights(k, d)]
        for k in range(layer.num_layers)
        for d in range(dirs)
    ]
    caches, finals, inp = [], [], x
    for layer_index in range(layer.num_layers):
        outs = []
        for d in range(dirs):
            k = layer_index * dirs + d
            seq = inp if d == 0 else inp[::-1]
            ys, final, cache = forward(seq, state0[k], reference.Params(*weights[k]))
            outs.append(ys if d == 0 else ys[::-1])
            caches.append(cache)
            finals.append(final)
        inp = np.concatenate(outs, axis=2)
    out = inp

    grads: dict[str, np.ndarray | None] = {}
    dstate0: list = [None] * len(caches)
    dout = dys
    for layer_index in reversed(range(layer.num_layers)):
        dinp = 0.0
        for d in range(dirs):
            k = layer_index * dirs + d
            dy = dout[..., d * H : (d + 1) * H]
            g = backward(caches[k], dy if d == 0 else dy[::-1], dfinal[k])
            dinp = dinp + (g.x if d == 0 else g.x[::-1])
            dstate0[k] = g.state0
            suffix = f"_l{layer_index}" + ("_reverse" if d else "")
            grads |= {"weight_ih" + suffix: g.w_ih, "weight_hh" + suffix: g.w_hh}
            grads |= {"bias_ih" + suffix: g.b_ih, "bias_hh" + suffix: g.b_hh}
        dout = dinp
    return out, finals, grads, dout, dstate0


FULL = layer_configs(lengths=("full",))


def _run_layer(layer, config: LayerConfig, x64, h64, dys, dh) -> list[torch.Tensor]:
    """Output, final states, d initial states (if given), d input and d every parameter of
    a linear loss (weights dys, dh), on leaves in the layer's dtype."""
    dtype = next(layer.parameters()).dtype
    x = x64.to(dtype, copy=True).requires_grad_()
    hx = [h.to(dtype, copy=True).requires_grad_() for h in h64]
    given = (tuple(hx) if len(hx) == 2 else hx[0]) if config.initial_state else None
    out, final = layer(x.transpose(0, 1) if config.batch_first else x, given)
    out = out.transpose(0, 1) if config.batch_first else out
    finals = final if isinstance(final, tuple) else (final,)
    loss = (out * dys.to(dtype)).sum()
    loss = loss + sum((f * d.to(dtype)).sum() for f, d in zip(finals, dh, strict=True))
    leaves = [*(hx if config.initial_state else []), x, *layer.parameters()]
    grads = torch.autograd.grad(loss, leaves)
    return [out.detach(), *(f.detach() for f in finals), *grads]


@pytest.mark.parametrize("config", FULL, ids=lambda c: c.id)
def test_layer_matches_reference(config: LayerConfig):
    layer = make_layer(rnnkit_class, config)
    n, S = config.num_layers * layer.num_directions, layer.cell.num_states
    g = torch.Generator().manual_seed(3)

    def draw(*shape):  # in float64, rounded to the config's dtype: both sides see one value
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(config.dtype).double()

    x64 = draw(T, B, D)
    h64 = [draw(n, B, H) for _ in range(S)]
    dys = draw(T, B, layer.num_directions * H)
    dh = [draw(n, B, H) for _ in range(S)]
    if not config.initial_state:
        h64 = [torch.zeros_like(h) for h in h64]
    actual = _run_layer(layer, config, x64, h64, dys, dh)

    ref_out, ref_finals, ref_grads, ref_dx, ref_dstate0 = reference_stack(
        layer,
        x64.numpy(),
        [tuple(h[k].numpy() for h in h64) for k in range(n)],
        dys.numpy(),
        [tuple(d[k].numpy() for d in dh) for k in range(n)],
    )
    names = ["output", *(f"final state {s}" for s in range(S))]
    expected = [ref_out, *(np.stack([f[s] for f in ref_finals]) for s in range(S))]
    if config.initial_state:
        names += [f"d initial state {s}" for s in range(S)]
        expected += [np.stack([d[s] for d in ref_dstate0]) for s in range(S)]
    names.append("d input")
    expected.append(ref_dx)
    for name, _ in layer.named_parameters():
        names.append(f"d {name}")
        expected.append(ref_grads[name])

    if config.dtype == torch.float64:
        for name, a, e in zip(names, actual, expected, strict=True):
            assert_rel_close(a, e, TOLERANCE[torch.float64], name)
        return
    _, bounds = fp32_layer_truth(layer, lambda m: _run_layer(m, config, x64, h64, dys, dh))
    for name, a, e, bound in zip(names, actual, expected, bounds, strict=True):
        assert_fp32_close(a, torch.from_numpy(np.asarray(e)), bound, name)


VARIABLE = layer_configs(lengths=("padded", "packed"), num_layers=(1, 2), dtypes=(torch.float64,))


@pytest.mark.parametrize("config", VARIABLE, ids=lambda c: c.id)
def test_variable_lengths_equal_each_sequence_alone(config: LayerConfig):
    """Outputs past a length are zero, h_n is taken at each sequence's own last step, and
    the reverse direction starts at each sequence's own end: the batched call equals B
    separate calls on the unpadded sequences."""
    layer = make_layer(rnnkit_class, config)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    lengths = sample_lengths(g)
    n, S = config.num_layers * layer.num_directions, layer.cell.num_states
    states = [torch.randn(n, B, H, generator=g, dtype=torch.float64) for _ in range(S)]
    hx = (tuple(states) if S == 2 else states[0]) if config.initial_state else None
    layer.batch_first = False  # layout is covered by the torch.nn parity matrix
    if config.lengths == "packed":
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, final = layer(packed, hx)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    else:
        out, final = layer(x, hx, lengths=lengths)
    finals = final if isinstance(final, tuple) else (final,)

    for b, L in enumerate(lengths.tolist()):
        alone_hx = None
        if config.initial_state:
            alone = [s[:, b : b + 1] for s in states]
            alone_hx = tuple(alone) if S == 2 else alone[0]
        alone_out, alone_final = layer(x[:L, b : b + 1], alone_hx)
        alone_finals = alone_final if isinstance(alone_final, tuple) else (alone_final,)
        assert_rel_close(out[:L, b], alone_out[:, 0], 1e-12, f"output of sequence {b}")
        assert not out[L:, b].any(), f"padding of sequence {b} is not zero"
        for s in range(S):
            assert_rel_close(finals[s][:, b], alone_finals[s][:, 0], 1e-12, f"final of {b}")


GRADIENTS = [
    c
    for c in layer_configs(lengths=("padded",), num_layers=(1, 2), dtypes=(torch.float64,))
    if c.initial_state and not c.batch_first
]


@pytest.mark.parametrize("config", GRADIENTS, ids=lambda c: c.id)
def test_variable_length_gradients_equal_each_sequence_alone(config: LayerConfig):
    """Backward too, with a sequence of length 0 among unsorted lengths: the gradients of
    the batched call (input, initial states, every weight) equal the sums over B separate
    calls on the unpadded sequences; a length-0 sequence passes dL/dh_n to dL/dh_0."""
    layer = make_layer(rnnkit_class, config)
    layer.batch_first = False
    g = torch.Generator().manual_seed(5)
    lengths = sample_lengths(g)
    lengths[B // 2] = 0
    n, S = config.num_layers * layer.num_directions, layer.cell.num_states
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64, requires_grad=True)
    states = [
        torch.randn(n, B, H, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(S)
    ]
    dy = torch.randn(T, B, layer.num_directions * H, generator=g, dtype=torch.float64)
    dfinal = [torch.randn(n, B, H, generator=g, dtype=torch.float64) for _ in range(S)]
    params = list(layer.parameters())

    def loss(out, final) -> torch.Tensor:
        finals = final if isinstance(final, tuple) else (final,)
        return (out * dy[: out.shape[0], : out.shape[1]]).sum() + sum(
            (f * df).sum() for f, df in zip(finals, dfinal, strict=True)
        )

    out, final = layer(x, tuple(states) if S == 2 else states[0], lengths=lengths)
    batched = torch.autograd.grad(loss(out, final), [x, *states, *params])

    expected = [torch.zeros_like(t) for t in batched]
    for b, L in enumerate(lengths.tolist()):
        alone = [s[:, b : b + 1].detach().requires_grad_() for s in states]
        if L == 0:  # never runs: h_n = h_0
            for s in range(S):
                expected[1 + s][:, b] += dfinal[s][:, b]
            continue
        xb = x[:L, b : b + 1].detach().requires_grad_()
        out_b, final_b = layer(xb, tuple(alone) if S == 2 else alone[0])
        finals_b = final_b if isinstance(final_b, tuple) else (final_b,)
        value = (out_b[:, 0] * dy[:L, b]).sum() + sum(
            (f[:, 0] * df[:, b]).sum() for f, df in zip(finals_b, dfinal, strict=True)
        )
        grads = torch.autograd.grad(value, [xb, *alone, *params])
        expected[0][:L, b] += grads[0][:, 0]
        for s in range(S):
            expected[1 + s][:, b] += grads[1 + s][:, 0]
        for k in range(len(params)):
            expected[1 + S + k] += grads[1 + S + k]
    names = ["d input", *(f"d initial state {s}" for s in range(S))]
    names += [f"d {name}" for name, _ in layer.named_parameters()]
    for name, a, e in zip(names, batched, expected, strict=True):
        assert_rel_close(a, e, 1e-11, name)
