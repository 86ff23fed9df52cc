"""The NumPy reference: hand-written BPTT against central finite differences (float64),
for every cell, every weight and bias, the inputs and the initial state(s)."""

from __future__ import annotations

import numpy as np
import pytest

from registry import ALL_CELLS
from rnnkit.nn import reference
from rnnkit.nn.cells import CELLS

T, B, D, H = 4, 2, 3, 5
EPS = 1e-6


def _problem(cell, seed: int, bias: bool = True):
    rng = np.random.default_rng(seed)
    G = cell.num_gates * H
    recurrent = cell.recurrent  # minGRU and minLSTM have no w_hh, b_hh
    params = reference.Params(
        w_ih=rng.normal(0, 0.6, (G, D)),
        w_hh=rng.normal(0, 0.6, (G, H)) if recurrent else None,
        b_ih=rng.normal(0, 0.3, G) if bias else None,
        b_hh=rng.normal(0, 0.3, G) if bias and recurrent else None,
    )
    x = rng.normal(size=(T, B, D))
    state0 = tuple(rng.normal(size=(B, H)) for _ in range(cell.num_states))
    dys = rng.normal(size=(T, B, H))
    dfinal = tuple(rng.normal(size=(B, H)) for _ in range(cell.num_states))
    return params, x, state0, dys, dfinal


def _loss(forward, x, state0, params, dys, dfinal) -> float:
    ys, final, _ = forward(x, state0, params)
    return float((ys * dys).sum() + sum((f * d).sum() for f, d in zip(final, dfinal, strict=True)))


def _numeric(f, array: np.ndarray) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of ``array``."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + EPS
        up = f()
        array[index] = saved - EPS
        down = f()
        array[index] = saved
        grad[index] = (up - down) / (2 * EPS)
    return grad


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", ALL_CELLS)  # the layer norms: test_layer_norm_cells.py
def test_backward_matches_finite_differences(name: str, bias: bool):
    cell = CELLS[name]
    forward, backward = reference.for_cell(cell)
    params, x, state0, dys, dfinal = _problem(cell, seed=len(name), bias=bias)
    _, _, cache = forward(x, state0, params)
    grads = backward(cache, dys, dfinal)

    def f():
        return _loss(forward, x, state0, params, dys, dfinal)

    checks = {
        "x": (x, grads.x),
        "w_ih": (params.w_ih, grads.w_ih),
        "w_hh": (params.w_hh, grads.w_hh),
    }
    if bias:
        checks |= {"b_ih": (params.b_ih, grads.b_ih), "b_hh": (params.b_hh, grads.b_hh)}
    else:
        assert grads.b_ih is None and grads.b_hh is None
    for k, (s, g) in enumerate(zip(state0, grads.state0, strict=True)):
        checks[f"state0[{k}]"] = (s, g)
    for what, (array, analytic) in checks.items():
        if array is None:  # a parameter the cell does not have
            assert analytic is None, what
            continue
        numeric = _numeric(f, array)
        assert analytic.shape == array.shape, what
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=what)


def test_relu_rnn_gradient_is_zero_where_inactive():
    """With every pre-activation negative the ReLU cell passes no gradient at all."""
    cell = CELLS["rnn_relu"]
    forward, backward = reference.for_cell(cell)
    params, x, state0, dys, dfinal = _problem(cell, seed=3)
    params.b_ih = np.full(H, -100.0)
    ys, _, cache = forward(x, state0, params)
    assert not ys.any()
    grads = backward(cache, dys, dfinal)
    assert not grads.x.any() and not grads.w_hh.any() and not grads.state0[0].any()
