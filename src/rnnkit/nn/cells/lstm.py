"""The long short-term memory cell (Hochreiter & Schmidhuber 1997, with the forget
gate of Gers et al. 2000), in the form and gate order (i, f, g, o) of ``torch.nn.LSTM``.

    i  = sigmoid(W_i x + b_ii + U_i h + b_hi)      input gate
    f  = sigmoid(W_f x + b_if + U_f h + b_hf)      forget gate
    g  = tanh(W_g x + b_ig + U_g h + b_hg)         candidate
    o  = sigmoid(W_o x + b_io + U_o h + b_ho)      output gate
    c' = f * c + i * g
    h' = o * tanh(c')

``weight_ih`` [4H, D] = [W_i; W_f; W_g; W_o], ``weight_hh`` [4H, H], biases [4H] each.
Jozefowicz et al. 2015 (section 3) found a forget-gate bias of 1 helps; layers expose it
as ``unit_forget_bias``. The hand-written backward is ``rnnkit.nn.reference.lstm``.

With a projection (``proj_size`` P < H; Sak et al. 2014, "Long short-term memory based
recurrent neural network architectures for large vocabulary speech recognition", the
LSTMP; torch.nn.LSTM's ``proj_size``), h is projected to P units:

    h' = W_hr (o * tanh(c'))                       weight_hr [P, H]

so h is [B, P], c stays [B, H], ``weight_hh`` is [4H, P], and the next layer reads P
(2P bidirectional) features.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.nn.cells.base import Cell, State


def _lstm_gates(
    gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None, *, h_in: Tensor | None = None
) -> dict[str, Tensor]:
    h = state[0] if h_in is None else h_in  # the h of the recurrent product (StepFn)
    gates = gx + F.linear(h, w_hh, b_hh)  # [B, R] @ [R, 4H] -> [B, 4H]
    i, f, g, o = gates.chunk(4, dim=1)  # each [B, H]
    return {
        "i": torch.sigmoid(i),
        "f": torch.sigmoid(f),
        "g": torch.tanh(g),
        "o": torch.sigmoid(o),
    }


def _lstm_step(
    gx: Tensor,
    state: State,
    w_hh: Tensor,
    b_hh: Tensor | None,
    w_hr: Tensor | None = None,
    *,
    h_in: Tensor | None = None,
) -> State:
    a = _lstm_gates(gx, state, w_hh, b_hh, h_in=h_in)
    c_new = a["f"] * state[1] + a["i"] * a["g"]  # [B, H]
    h_new = a["o"] * torch.tanh(c_new)  # [B, H]
    if w_hr is not None:
        h_new = F.linear(h_new, w_hr)  # [B, H] @ [H, P] -> [B, P]
    return (h_new, c_new)


LSTM = Cell("lstm", 4, 2, _lstm_step, (), "LSTM", gate_fn=_lstm_gates, gate_names=("i", "f", "o"))


def lstm_cell(proj_size: int = 0) -> Cell:
    """The LSTM record, with h projected to ``proj_size`` units when it is not 0 (the
    caller checks 0 <= proj_size < hidden_size)."""
    return LSTM if proj_size == 0 else replace(LSTM, proj_size=proj_size)


@torch.no_grad()
def set_forget_bias(bias_ih: Tensor, bias_hh: Tensor, value: float = 1.0) -> None:
    """Make the forget gate's total bias ``value``: b_if = value, b_hf = 0."""
    H = bias_ih.shape[0] // 4
    bias_ih[H : 2 * H] = value
    bias_hh[H : 2 * H] = 0.0
