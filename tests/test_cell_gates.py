"""``Cell.gates``: the named activations of one step. They equal the NumPy reference's
(float64), the step is exactly the cell equations applied to them, and a cell without
gates says so."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.diagnostics import gate_values
from rnnkit.nn import reference
from rnnkit.nn.cells import CELLS, GRU, GRU_RESET_BEFORE, LSTM

B, H = 3, 5
GATED = [GRU, GRU_RESET_BEFORE, LSTM]


def _step_inputs(cell, seed: int, bias: bool):
    """gx [B, G], state, w_hh [G, H], b_hh [G] or None; float64."""
    g = torch.Generator().manual_seed(seed)
    G = cell.num_gates * H
    gx = torch.randn(B, G, generator=g, dtype=torch.float64)
    state = tuple(
        torch.randn(B, H, generator=g, dtype=torch.float64) for _ in range(cell.num_states)
    )
    w_hh = torch.randn(G, H, generator=g, dtype=torch.float64) / H**0.5
    b_hh = torch.randn(G, generator=g, dtype=torch.float64) if bias else None
    return gx, state, w_hh, b_hh


def _reference_step(cell, gx, state, w_hh, b_hh):
    """One reference step with W_ih = I and b_ih = 0, so its input projection is gx:
    -> (the reference's saved activations by name, its new state)."""
    G = gx.shape[1]
    p = reference.Params(np.eye(G), w_hh.numpy(), None, None if b_hh is None else b_hh.numpy())
    x = gx.numpy()[None]  # [1, B, G]
    s0 = tuple(s.numpy() for s in state)
    if cell is LSTM:
        _, final, (*_, saved) = reference.lstm.forward(x, s0, p)
        _, _, i, f, g, o, _ = saved[0]
        return {"i": i, "f": f, "g": g, "o": o}, final
    _, final, (*_, saved) = reference.gru.forward(x, s0, p, **dict(cell.options))
    _, _, r, z, n, _ = saved[0]  # (h, h_in, r, z, n, gh_n)
    return {"r": r, "z": z, "n": n}, final


@pytest.mark.parametrize("cell", GATED, ids=lambda c: c.name)
@pytest.mark.parametrize("bias", [True, False])
def test_gates_equal_the_reference_and_make_the_step(cell, bias):
    gx, state, w_hh, b_hh = _step_inputs(cell, seed=7, bias=bias)
    gates = cell.gates(gx, state, w_hh, b_hh)
    expected, final = _reference_step(cell, gx, state, w_hh, b_hh)
    assert list(gates) == list(expected)  # weight order
    for name, value in gates.items():
        assert value.shape == (B, H)
        np.testing.assert_allclose(value.numpy(), expected[name], rtol=1e-12, atol=1e-14)
    step = cell.step(gx, state, w_hh, b_hh)
    if cell is LSTM:  # c' = f c + i g, h' = o tanh(c')
        c = gates["f"] * state[1] + gates["i"] * gates["g"]
        by_hand = (gates["o"] * torch.tanh(c), c)
    else:  # h' = (1 - z) n + z h
        by_hand = ((1 - gates["z"]) * gates["n"] + gates["z"] * state[0],)
    for got, want, ref in zip(step, by_hand, final, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", GATED, ids=lambda c: c.name)
def test_diagnostics_read_the_sigmoid_gates_from_the_cell(cell):
    gx, state, w_hh, b_hh = _step_inputs(cell, seed=3, bias=True)
    values = gate_values(cell, gx, state, w_hh, b_hh)
    assert tuple(values) == cell.gate_names
    for name, value in values.items():
        assert torch.equal(value, cell.gates(gx, state, w_hh, b_hh)[name])


@pytest.mark.parametrize("name", ["rnn_tanh", "rnn_relu"])
def test_a_cell_without_gates_says_so(name):
    cell = CELLS[name]
    gx, state, w_hh, b_hh = _step_inputs(cell, seed=0, bias=True)
    assert cell.gate_names == ()
    with pytest.raises(ValueError, match=f"cell '{name}' has no gates"):
        cell.gates(gx, state, w_hh, b_hh)
