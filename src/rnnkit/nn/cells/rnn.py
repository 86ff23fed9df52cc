"""The Elman RNN cell (Elman 1990), with tanh or ReLU.

    h' = act(W x + b_i + U h + b_h)

Weights, as ``torch.nn.RNN``: ``weight_ih`` W [H, D], ``weight_hh`` U [H, H],
``bias_ih`` b_i [H], ``bias_hh`` b_h [H]; one gate (G = H).
The hand-written backward is ``rnnkit.nn.reference.rnn``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.nn.cells.base import Cell, State


def _tanh_step(
    gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None, *, h_in: Tensor | None = None
) -> State:
    h = state[0] if h_in is None else h_in  # the h of the recurrent product (StepFn)
    return (torch.tanh(gx + F.linear(h, w_hh, b_hh)),)  # [B, H] @ [H, H] -> [B, H]


def _relu_step(
    gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None, *, h_in: Tensor | None = None
) -> State:
    h = state[0] if h_in is None else h_in
    return (torch.relu(gx + F.linear(h, w_hh, b_hh)),)  # [B, H] @ [H, H] -> [B, H]


RNN_TANH = Cell("rnn_tanh", 1, 1, _tanh_step, (("nonlinearity", "tanh"),), "RNN_TANH")
RNN_RELU = Cell("rnn_relu", 1, 1, _relu_step, (("nonlinearity", "relu"),), "RNN_RELU")


def rnn_cell(nonlinearity: str) -> Cell:
    """The RNN cell record for ``nonlinearity`` ('tanh' or 'relu')."""
    if nonlinearity == "tanh":
        return RNN_TANH
    if nonlinearity == "relu":
        return RNN_RELU
    raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
