"""The two GRU forms: reset-before (Cho 2014, which torch lacks) checked against a
tiny example worked from the equations, the reference against the composite path, and
the docstring's claim that the textbook's z-relabelled update is the same cell."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rnnkit
from helpers import assert_rel_close
from rnnkit.nn import reference
from rnnkit.nn.cells import GRU_RESET_BEFORE

# One unit, one input feature, two steps; gate order (r, z, n).
W_IH = [0.5, -0.3, 0.8]
W_HH = [0.2, 0.4, -0.6]
B_IH = [0.1, 0.0, -0.1]
B_HH = [0.05, -0.2, 0.3]
XS = [1.0, -2.0]
H0 = 0.5


def _sigmoid(a: float) -> float:
    return 1.0 / (1.0 + math.exp(-a))


def _by_hand(reset_after: bool) -> list[float]:
    """h_1, h_2 from the equations in rnnkit.nn.cells.gru, one scalar at a time."""
    h, hs = H0, []
    for x in XS:
        r = _sigmoid(W_IH[0] * x + B_IH[0] + W_HH[0] * h + B_HH[0])
        z = _sigmoid(W_IH[1] * x + B_IH[1] + W_HH[1] * h + B_HH[1])
        if reset_after:
            n = math.tanh(W_IH[2] * x + B_IH[2] + r * (W_HH[2] * h + B_HH[2]))
        else:
            n = math.tanh(W_IH[2] * x + B_IH[2] + W_HH[2] * (r * h) + B_HH[2])
        h = (1 - z) * n + z * h
        hs.append(h)
    return hs


def _scalar_gru(reset_after: bool) -> rnnkit.GRU:
    gru = rnnkit.GRU(1, 1, reset_after=reset_after, dtype=torch.float64)
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.tensor(W_IH, dtype=torch.float64)[:, None])
        gru.weight_hh_l0.copy_(torch.tensor(W_HH, dtype=torch.float64)[:, None])
        gru.bias_ih_l0.copy_(torch.tensor(B_IH, dtype=torch.float64))
        gru.bias_hh_l0.copy_(torch.tensor(B_HH, dtype=torch.float64))
    return gru


@pytest.mark.parametrize("reset_after", [False, True], ids=["reset_before", "reset_after"])
def test_tiny_example_by_hand(reset_after: bool):
    expected = _by_hand(reset_after)
    gru = _scalar_gru(reset_after)
    x = torch.tensor(XS, dtype=torch.float64)[:, None, None]  # [T=2, B=1, D=1]
    out, h_n = gru(x, torch.full((1, 1, 1), H0, dtype=torch.float64))
    assert out.flatten().tolist() == pytest.approx(expected, rel=1e-14, abs=0)
    assert h_n.item() == pytest.approx(expected[-1], rel=1e-14, abs=0)

    forward, _ = reference.for_cell(gru.cell)
    params = reference.Params(
        *(np.array(v, float)[:, None] for v in (W_IH, W_HH)), np.array(B_IH), np.array(B_HH)
    )
    ys, _, _ = forward(np.array(XS)[:, None, None], (np.full((1, 1), H0),), params)
    assert ys.flatten().tolist() == pytest.approx(expected, rel=1e-14, abs=0)


def test_the_two_forms_differ():
    before, after = _by_hand(False), _by_hand(True)
    assert abs(before[-1] - after[-1]) > 1e-3


@pytest.mark.parametrize("seed", range(5))
def test_reset_before_reference_matches_composite(seed: int):
    """Random shapes; every gradient of the reference against autograd of the composite."""
    rng = np.random.default_rng(seed)
    T, B, D, H = (int(v) for v in rng.integers(1, 7, size=4))
    torch.manual_seed(seed)
    gru = rnnkit.GRU(D, H, reset_after=False, dtype=torch.float64)
    x = torch.randn(T, B, D, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, B, H, dtype=torch.float64, requires_grad=True)
    dys, dh = torch.randn(T, B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    with rnnkit.use_backend("composite"):
        out, h_n = gru(x, h0)
    ((out * dys).sum() + (h_n[0] * dh).sum()).backward()

    forward, backward = reference.for_cell(GRU_RESET_BEFORE)
    w = [p.detach().numpy() for p in gru.parameters()]
    ys, (hT,), cache = forward(x.detach().numpy(), (h0[0].detach().numpy(),), reference.Params(*w))
    g = backward(cache, dys.numpy(), (dh.numpy(),))
    assert_rel_close(out.detach(), ys, 1e-12, "output")
    assert_rel_close(h_n[0].detach(), hT, 1e-12, "h_n")
    assert_rel_close(x.grad, g.x, 1e-12, "d x")
    assert_rel_close(h0.grad[0], g.state0[0], 1e-12, "d h0")
    for p, ref in zip(gru.parameters(), (g.w_ih, g.w_hh, g.b_ih, g.b_hh), strict=True):
        assert_rel_close(p.grad, ref, 1e-12, "d weight")


@pytest.mark.parametrize("reset_after", [False, True])
def test_textbook_update_is_the_same_cell_with_z_relabelled(reset_after: bool):
    """h' = z n + (1 - z) h with z's weights negated equals our h' = (1 - z) n + z h."""
    torch.manual_seed(0)
    gru = rnnkit.GRU(3, 4, reset_after=reset_after, dtype=torch.float64)
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    ours, _ = gru(x)

    flipped = {k: v.clone() for k, v in gru.state_dict().items()}
    for v in flipped.values():
        v[4:8] *= -1  # the z block (rows H..2H): sigmoid(-a) = 1 - sigmoid(a)
    h = torch.zeros(2, 4, dtype=torch.float64)
    w_ih, w_hh = flipped["weight_ih_l0"], flipped["weight_hh_l0"]
    b_ih, b_hh = flipped["bias_ih_l0"], flipped["bias_hh_l0"]
    for t in range(6):
        gx, gh = x[t] @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        r = torch.sigmoid(gx[:, :4] + gh[:, :4])
        z = torch.sigmoid(gx[:, 4:8] + gh[:, 4:8])
        if reset_after:
            n = torch.tanh(gx[:, 8:] + r * gh[:, 8:])
        else:
            n = torch.tanh(gx[:, 8:] + (r * h) @ w_hh[8:].T + b_hh[8:])
        h = z * n + (1 - z) * h  # the textbook's update
        assert_rel_close(h, ours[t], 1e-14, f"step {t}")
