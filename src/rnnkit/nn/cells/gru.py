"""The gated recurrent unit (Cho et al. 2014), in both of its published forms.

Gate order (r, z, n), as ``torch.nn.GRU``: ``weight_ih`` [3H, D] = [W_r; W_z; W_n],
``weight_hh`` [3H, H] = [U_r; U_z; U_n], ``bias_ih`` = [b_ir; b_iz; b_in],
``bias_hh`` = [b_hr; b_hz; b_hn].

    r  = sigmoid(W_r x + b_ir + U_r h + b_hr)          reset gate
    z  = sigmoid(W_z x + b_iz + U_z h + b_hz)          update gate
    n  = tanh(W_n x + b_in + r * (U_n h + b_hn))       reset_after=True  (cuDNN, torch.nn)
    n  = tanh(W_n x + b_in + U_n (r * h) + b_hn)       reset_after=False (Cho 2014 eq. 8,
                                                       Chung et al. 2014; the textbook form)
    h' = (1 - z) * n + z * h

The textbook writes h' = z * n + (1 - z) * h: that is the same cell with z relabelled
as 1 - z (negate U_z, W_z and both z biases), so no expressive power differs. The
reset-after form lets U_n h be computed in the same GEMM as U_r h and U_z h; the
reset-before form needs r before it can multiply by U_n, so each step has two
dependent GEMMs. The hand-written backward is ``rnnkit.nn.reference.gru``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.nn.cells.base import Cell, State


def _reset_after_gates(
    gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None, *, h_in: Tensor | None = None
) -> dict[str, Tensor]:
    h = state[0] if h_in is None else h_in  # the h of the recurrent product (StepFn)
    gh = F.linear(h, w_hh, b_hh)  # [B, H] @ [H, 3H] -> [B, 3H]
    x_r, x_z, x_n = gx.chunk(3, dim=1)  # each [B, H]
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    return {"r": r, "z": z, "n": torch.tanh(x_n + r * h_n)}


def _reset_before_gates(
    gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None, *, h_in: Tensor | None = None
) -> dict[str, Tensor]:
    h = state[0] if h_in is None else h_in  # the h of both recurrent products (StepFn)
    H = h.shape[1]
    b_rz, b_n = (None, None) if b_hh is None else (b_hh[: 2 * H], b_hh[2 * H :])
    rz = torch.sigmoid(gx[:, : 2 * H] + F.linear(h, w_hh[: 2 * H], b_rz))  # [B, 2H]
    r, z = rz.chunk(2, dim=1)
    n = torch.tanh(gx[:, 2 * H :] + F.linear(r * h, w_hh[2 * H :], b_n))  # [B, H]
    return {"r": r, "z": z, "n": n}


def _update(h: Tensor, a: dict[str, Tensor]) -> State:
    n, z = a["n"], a["z"]
    return (n + z * (h - n),)  # == (1 - z) * n + z * h


def _reset_after_step(
    gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None, *, h_in: Tensor | None = None
) -> State:
    return _update(state[0], _reset_after_gates(gx, state, w_hh, b_hh, h_in=h_in))


def _reset_before_step(
    gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None, *, h_in: Tensor | None = None
) -> State:
    return _update(state[0], _reset_before_gates(gx, state, w_hh, b_hh, h_in=h_in))


GRU = Cell(
    "gru",
    3,
    1,
    _reset_after_step,
    (("reset_after", True),),
    "GRU",
    gate_fn=_reset_after_gates,
    gate_names=("r", "z"),
)
GRU_RESET_BEFORE = Cell(
    "gru_reset_before",
    3,
    1,
    _reset_before_step,
    (("reset_after", False),),
    gate_fn=_reset_before_gates,
    gate_names=("r", "z"),
)


def gru_cell(reset_after: bool) -> Cell:
    """The GRU cell record for the chosen form."""
    return GRU if reset_after else GRU_RESET_BEFORE
