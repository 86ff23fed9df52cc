"""The minimal GRU and LSTM (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs
All We Needed?", arXiv:2410.01201, sec. 3): gates that read x_t only, so the recurrence
is linear in h and a parallel scan runs it (``rnnkit.nn.kernels.scan``).

minGRU (sec. 3.1): gate order (z, h~), ``weight_ih`` = [W_z; W_h] [2H, D], ``bias_ih`` [2H]

    z  = sigmoid(W_z x + b_z)                  update gate
    h~ = g(W_h x + b_h)                        candidate
    h' = (1 - z) * h + z * h~

minLSTM (sec. 3.2): gate order (i, f, h~) as torch.nn.LSTM's (i, f, g),
``weight_ih`` = [W_i; W_f; W_h] [3H, D], ``bias_ih`` [3H]

    i  = sigmoid(W_i x + b_i),  f = sigmoid(W_f x + b_f)
    h~ = g(W_h x + b_h)
    f' = f / (f + i),  i' = i / (f + i)         (sec. 3.2, step 3: a scale independent of t)
    h' = f' * h + i' * h~

No ``weight_hh``/``bias_hh``: the record's ``scan_terms`` marks the cell as not
``recurrent``, and its step ignores the None it receives for them. The candidate goes
through g(x) = x + 0.5 for x >= 0, sigmoid(x) otherwise: the paper's log-space version
(appendix, after Heinsen 2023), continuous at 0 and positive, so log h~ exists. The vanilla
version's unbounded linear candidate is not offered (it would need a scan of signed terms).

Both are h' = a * h + b with a in (0, 1) and b > 0, computed from gx alone; in log space
(what ``scan_terms`` returns, each [T, B, H]):

    minGRU   log a = log(1 - z) = -softplus(k_z),   log b = -softplus(-k_z) + log g(k_h)
    minLSTM  d = log i - log f = softplus(-k_f) - softplus(-k_i)
             log a = log f' = -softplus(d),          log b = -softplus(-d) + log g(k_h)

with k = gx's blocks. The hand-written backward is ``rnnkit.nn.reference.minimal``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.nn.cells.base import Cell, State


def g(k: Tensor) -> Tensor:
    """The positive candidate activation (paper appendix): k + 0.5 for k >= 0, sigmoid(k)
    below."""
    return torch.where(k >= 0, k + 0.5, torch.sigmoid(k))


def log_g(k: Tensor) -> Tensor:
    """log g(k), without forming g: log(k + 0.5) for k >= 0, -softplus(-k) below (relu
    keeps the branch not taken finite, so its zero gradient stays zero)."""
    return torch.where(k >= 0, torch.log(F.relu(k) + 0.5), -F.softplus(-k))


def _mingru_gates(
    gx: Tensor, state: State, w_hh: Tensor | None, b_hh: Tensor | None
) -> dict[str, Tensor]:
    k_z, k_h = gx.chunk(2, dim=-1)  # each [B, H]
    return {"z": torch.sigmoid(k_z), "h_tilde": g(k_h)}


def _mingru_step(gx: Tensor, state: State, w_hh: Tensor | None, b_hh: Tensor | None) -> State:
    a = _mingru_gates(gx, state, w_hh, b_hh)
    h = state[0]
    return (h + a["z"] * (a["h_tilde"] - h),)  # == (1 - z) h + z h~


def _mingru_scan_terms(gx: Tensor) -> tuple[Tensor, Tensor]:
    k_z, k_h = gx.chunk(2, dim=-1)  # each [T, B, H]
    return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)


def _minlstm_gates(
    gx: Tensor, state: State, w_hh: Tensor | None, b_hh: Tensor | None
) -> dict[str, Tensor]:
    k_i, k_f, k_h = gx.chunk(3, dim=-1)  # each [B, H]
    return {"i": torch.sigmoid(k_i), "f": torch.sigmoid(k_f), "h_tilde": g(k_h)}


def _minlstm_step(gx: Tensor, state: State, w_hh: Tensor | None, b_hh: Tensor | None) -> State:
    a = _minlstm_gates(gx, state, w_hh, b_hh)
    i, f = a["i"], a["f"]
    total = f + i
    return ((f * state[0] + i * a["h_tilde"]) / total,)  # == f' h + i' h~


def _minlstm_scan_terms(gx: Tensor) -> tuple[Tensor, Tensor]:
    k_i, k_f, k_h = gx.chunk(3, dim=-1)  # each [T, B, H]
    d = F.softplus(-k_f) - F.softplus(-k_i)  # log i - log f
    return -F.softplus(d), -F.softplus(-d) + log_g(k_h)


MINGRU = Cell(
    "mingru",
    2,
    1,
    _mingru_step,
    (("lstm", False),),
    gate_fn=_mingru_gates,
    gate_names=("z",),
    scan_terms=_mingru_scan_terms,
)
MINLSTM = Cell(
    "minlstm",
    3,
    1,
    _minlstm_step,
    (("lstm", True),),
    gate_fn=_minlstm_gates,
    gate_names=("i", "f"),
    scan_terms=_minlstm_scan_terms,
)
