"""Diagnostics: the step-by-step replay equals the layer; per-step gradient norms and
Jacobian norms equal brute-force computations; gate statistics on hand-set weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import assert_rel_close, rnnkit_class
from registry import B, D, H, T, layer_configs, make_layer
from rnnkit.diagnostics import (
    gate_trace,
    gradient_flow,
    jacobian_norms,
    saturated_fraction,
    unit_heatmap,
    unroll,
)
from rnnkit.nn.factory import recurrent_layer

FULL = layer_configs(num_layers=(1, 2), lengths=("full",), dtypes=(torch.float64,))


@pytest.mark.parametrize("config", FULL, ids=lambda c: c.id)
def test_unroll_equals_layer(config):
    layer = make_layer(rnnkit_class, config)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((B, T, D) if config.batch_first else (T, B, D), generator=g).double()
    hx = None
    if config.initial_state:
        n = config.num_layers * (2 if config.bidirectional else 1)
        states = [torch.randn(n, B, H, generator=g, dtype=torch.float64) for _ in range(2)]
        hx = tuple(states) if config.cell == "lstm" else states[0]
    out, final = layer(x, hx)
    run = unroll(layer, x, hx)
    assert_rel_close(run.output_in_layer_layout(), out, 1e-12, "output")
    finals = final if isinstance(final, tuple) else (final,)
    replayed = run.final()
    replayed = replayed if isinstance(replayed, tuple) else (replayed,)
    for ours, theirs in zip(replayed, finals, strict=True):
        assert_rel_close(ours, theirs, 1e-12, "final state")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm", "gru_ln", "mingru"])
def test_unroll_replays_the_regularisers_as_the_layer(cell, training):
    """Under the same seed the replay draws the layer's masks and applies them as it does
    (training), and zoneout's expectation in evaluation: outputs and final states equal."""
    recurrent = cell != "mingru"
    torch.manual_seed(0)
    layer = recurrent_layer(
        cell,
        D,
        H,
        2,
        bidirectional=True,
        dropout=0.2,
        variants={
            "recurrent_dropout": 0.3 if recurrent else 0.0,
            "weight_drop": 0.4 if recurrent else 0.0,
            "zoneout": 0.25,
            "zoneout_cell": 0.5 if cell == "lstm" else None,
            "locked_dropout": True,
        },
    )
    layer = layer.double().train(training)
    x = torch.randn(T, B, D, dtype=torch.float64)
    torch.manual_seed(5)
    out, final = layer(x)
    torch.manual_seed(5)
    run = unroll(layer, x)
    assert_rel_close(run.output, out, 1e-12, "output")
    finals = final if isinstance(final, tuple) else (final,)
    replayed = run.final()
    replayed = replayed if isinstance(replayed, tuple) else (replayed,)
    for ours, theirs in zip(replayed, finals, strict=True):
        assert_rel_close(ours, theirs, 1e-12, "final state")
    plain = recurrent_layer(cell, D, H, 2, bidirectional=True).double().eval()
    plain.load_state_dict(layer.state_dict())
    assert not torch.allclose(plain(x)[0], out), "the regularisers should change the output"


def _single_layers(stack, cell: str) -> list:
    """One-layer, one-direction copies of each layer of ``stack``, same weights."""
    copies = []
    for l in range(stack.num_layers):
        one = recurrent_layer(cell, D if l == 0 else H, H).double()
        one.load_state_dict(
            {k.replace(f"_l{l}", "_l0"): v for k, v in stack.state_dict().items() if f"_l{l}" in k}
        )
        copies.append(one)
    return copies


def _brute_force_norms(stack, cell: str, x, weight) -> np.ndarray:
    """[L, T, B]: ||dL/dh_t||, each (l, t) from its own forward and backward in which h_t
    of layer l is a leaf: layers below run whole, layer l runs to t, then from h_t on
    (the layer's own forward with hx = h_t, c_t fixed), then the layers above."""
    layers = _single_layers(stack, cell)
    L = len(layers)
    norms = np.zeros((L, T, B))
    for l in range(L):
        with torch.no_grad():
            inp = x
            for below in layers[:l]:
                inp = below(inp)[0]
        for t in range(T):
            with torch.no_grad():
                head, fin = layers[l](inp[: t + 1])
            states = fin if isinstance(fin, tuple) else (fin,)
            h_t = states[0][0].clone().requires_grad_()  # [B, H]
            pieces = [head[:t], h_t[None]]
            if t < T - 1:
                hx = (h_t[None], states[1]) if cell == "lstm" else h_t[None]
                pieces.append(layers[l](inp[t + 1 :], hx)[0])
            out = torch.cat(pieces)
            for above in layers[l + 1 :]:
                out = above(out)[0]
            loss = (weight * out).sum() + 0.5 * (out**2).sum()
            (grad,) = torch.autograd.grad(loss, h_t)
            norms[l, t] = grad.norm(dim=1).numpy()
    return norms


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "gru", "gru_reset_before", "lstm"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_gradient_norms_match_brute_force(cell, num_layers):
    stack = recurrent_layer(cell, D, H, num_layers).double()
    x = torch.randn(T, B, D, dtype=torch.float64)
    weight = torch.randn(T, B, H, dtype=torch.float64)
    flow = gradient_flow(stack, x, lambda out, h_n: (weight * out).sum() + 0.5 * (out**2).sum())
    expected = _brute_force_norms(stack, cell, x, weight)
    assert flow.per_sequence.shape == (num_layers, 1, T, B)
    assert_rel_close(flow.per_sequence[:, 0], expected, 1e-10, "per-step gradient norms")
    assert_rel_close(flow.norms[:, 0], expected.mean(axis=2), 1e-10, "batch-mean norms")
    assert all(p.grad is None for p in stack.parameters())


def test_gradient_flow_per_sequence_is_a_finite_difference():
    """dL/dh_t against central differences of L in h_t's direction (one tanh RNN)."""
    rnn = recurrent_layer("rnn_tanh", D, H).double()
    x = torch.randn(T, 1, D, dtype=torch.float64)
    w_out = torch.randn(T, 1, H, dtype=torch.float64)
    t = 1
    flow = gradient_flow(rnn, x, lambda out, h: (w_out * out).sum())

    def loss_with(h_t):  # L as a function of h_t, from the layer's own forward
        with torch.no_grad():
            head = rnn(x[: t + 1])[0]
            tail = rnn(x[t + 1 :], h_t[None])[0]
        return float((w_out * torch.cat([head[:t], h_t[None], tail])).sum())

    h_t = rnn(x[: t + 1])[0][t].detach()
    eps, grad = 1e-6, torch.zeros(1, H, dtype=torch.float64)
    for i in range(H):
        e = torch.zeros_like(h_t)
        e[0, i] = eps
        grad[0, i] = (loss_with(h_t + e) - loss_with(h_t - e)) / (2 * eps)
    assert math.isclose(flow.per_sequence[0, 0, t, 0], float(grad.norm()), rel_tol=1e-7)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_jacobian_norms_match_functional_jacobian(cell):
    rnn = recurrent_layer(cell, D, H).double()
    x = torch.randn(T, B, D, dtype=torch.float64)
    norms = jacobian_norms(rnn, x)
    with torch.no_grad():
        out, _ = rnn(x)
    expected = np.zeros(T)
    for t in range(T - 1):
        for b in range(B):
            xs = x[t + 1 :, b : b + 1]
            c_t = None
            if cell == "lstm":  # c_t held fixed, as in the diagnostics
                c_t = rnn(x[: t + 1, b : b + 1])[1][1]

            def h_last(h, xs=xs, c_t=c_t):
                hx = (h.view(1, 1, H), c_t) if c_t is not None else h.view(1, 1, H)
                return rnn(xs, hx)[0][-1, 0]

            J = torch.autograd.functional.jacobian(h_last, out[t, b])  # [H, H]
            expected[t] += torch.linalg.matrix_norm(J, ord=2).item() / B
    expected[T - 1] = 1.0  # dh_T/dh_T is the identity
    assert_rel_close(norms, expected, 1e-10, "Jacobian norms")


def test_jacobian_of_a_linear_rnn_is_a_matrix_power():
    """relu RNN with positive states and no input is linear: dh_T/dh_t = U^(T-1-t)."""
    rnn = recurrent_layer("rnn_relu", D, H).double()
    with torch.no_grad():
        rnn.weight_ih_l0.zero_()
        rnn.bias_ih_l0.fill_(1.0)
        rnn.bias_hh_l0.zero_()
        rnn.weight_hh_l0.copy_(0.5 * torch.eye(H) + 0.02 * torch.rand(H, H).double())
    norms = jacobian_norms(rnn, torch.zeros(T, 2, D, dtype=torch.float64))
    U = rnn.weight_hh_l0.detach()
    expected = [torch.linalg.matrix_norm(torch.matrix_power(U, T - 1 - t), ord=2) for t in range(T)]
    assert_rel_close(norms, torch.stack(expected), 1e-12, "relu Jacobian")


def _zero(layer):
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
    return layer


def test_gate_saturation_on_hand_set_gru():
    gru = _zero(recurrent_layer("gru", 2, 4))
    with torch.no_grad():
        gru.bias_ih_l0[:4] = torch.tensor([5.0, -5.0, 0.0, 0.0])  # r: 2 of 4 units saturated
        gru.bias_hh_l0[4:8] = 3.0  # z = sigmoid(3) = 0.953 > 0.9 everywhere
    trace = gate_trace(gru, torch.randn(6, 3, 2))
    assert trace.gates["r"].shape == (6, 3, 4)
    expected_r = torch.sigmoid(torch.tensor([5.0, -5.0, 0.0, 0.0])).expand(6, 3, 4)
    assert torch.allclose(trace.gates["r"], expected_r)
    assert trace.saturated() == {"r": 0.5, "z": 1.0}
    assert np.allclose(trace.saturated_by_time("r"), 0.5)
    assert np.allclose(trace.quantiles("z"), 1 / (1 + math.exp(-3)))


def test_gate_saturation_on_hand_set_lstm_both_directions():
    lstm = _zero(rnnkit_class("lstm")(2, 4, bidirectional=True))
    with torch.no_grad():
        for bias in (lstm.bias_ih_l0, lstm.bias_ih_l0_reverse):
            bias[4:8] = 3.0  # f saturated open
            bias[12:16] = torch.tensor([-3.0, 0.0, 0.0, 0.0])  # o: one unit in four
    for direction in (0, 1):
        trace = gate_trace(lstm, torch.randn(5, 2, 2), direction=direction)
        assert trace.saturated() == {"i": 0.0, "f": 1.0, "o": 0.25}


def test_saturated_fraction_thresholds():
    values = torch.tensor([0.05, 0.1, 0.5, 0.9, 0.95], dtype=torch.float64)
    assert saturated_fraction(values) == 0.4  # 0.1 and 0.9 themselves are not saturated
    assert saturated_fraction(values, low=0.2, high=0.8) == 0.8
    with pytest.raises(ValueError, match="low < high"):
        saturated_fraction(values, low=0.9, high=0.1)


def test_gate_trace_rejects_a_gateless_cell():
    with pytest.raises(ValueError, match="no gates"):
        gate_trace(recurrent_layer("rnn_tanh", 2, 3), torch.randn(4, 1, 2))


def test_unroll_rejects_lengths_style_inputs():
    gru = recurrent_layer("gru", 2, 3)
    with pytest.raises(ValueError, match="every step full"):
        unroll(gru, torch.randn(4, 2))


@pytest.mark.parametrize(("cell", "what"), [("gru", "h"), ("lstm", "f"), ("rnn_tanh", "h")])
def test_unit_heatmap_over_a_text(tmp_path, cell, what):
    from rnnkit.synthetic.agreement import INDEX, VOCAB

    words = "the cats that the dog likes near the king".split()
    tokens = [INDEX[w] for w in words]
    layer = recurrent_layer(cell, len(VOCAB), 5)
    x = torch.nn.functional.one_hot(torch.tensor(tokens), len(VOCAB)).float()  # [T, V]
    path = unit_heatmap(
        layer, x, tokens, VOCAB.__getitem__, [0, 4], tmp_path / "map.png", what=what
    )
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="tokens for an input of"):
        unit_heatmap(layer, x, tokens[:-1], VOCAB.__getitem__, [0], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="out of range"):
        unit_heatmap(layer, x, tokens, VOCAB.__getitem__, [5], tmp_path / "bad.png")
