"""Single-step cell modules: drop-ins for ``torch.nn.RNNCell/GRUCell/LSTMCell``.

They apply one ``rnnkit.nn.cells`` step; use them to write your own time loop (for
example a decoder that feeds back its own output).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.common import checks as _checks
from rnnkit.nn.cells import (
    GRU_LN,
    LSTM,
    LSTM_LN,
    MINGRU,
    MINLSTM,
    Cell,
    gru_cell,
    rnn_cell,
    set_forget_bias,
)
from rnnkit.nn.cells.base import STANDARD_PARAMETERS


class CellBase(nn.Module):
    """One step of a ``Cell``: ``weight_ih`` [G, D], ``weight_hh`` [G, H], biases [G], and
    the record's further parameters (``Cell.parameters``: a layer norm's gains). A
    standard name the record lacks is None (without bias: the biases, as torch.nn; a
    cell that is not ``recurrent``, minGRU or minLSTM: ``weight_hh`` and ``bias_hh``)."""

    weight_ih: Tensor
    weight_hh: Tensor | None
    bias_ih: Tensor | None
    bias_hh: Tensor | None

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.bias = bool(bias)
        factory = {"device": device, "dtype": dtype}
        specs = cell.parameters(input_size, hidden_size, self.bias)
        self._kinds = tuple(kind for kind, _ in specs)
        for kind in STANDARD_PARAMETERS:  # the names exist, as None, where the cell lacks them
            if kind not in self._kinds:
                self.register_parameter(kind, None)
        for kind, shape in specs:
            self.register_parameter(kind, nn.Parameter(torch.empty(shape, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As the layers': torch.nn's uniform draw, or the record's constant."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for kind in self._kinds:
            value = self.cell.initial_value(kind)
            if value is None:
                nn.init.uniform_(getattr(self, kind), -bound, bound)
            else:
                nn.init.constant_(getattr(self, kind), value)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, cell={self.cell.name}, bias={self.bias}"

    def forward(self, input: Tensor, hx=None):
        """input [B, D] or [D]; hx [B, H] (a tuple (h, c) for the LSTM) -> the new state."""
        x = _checks.floating("input", _checks.tensor("input", input))
        if x.dim() not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"input must be [B, {self.input_size}] or [{self.input_size}], "
                f"got shape {tuple(x.shape)}"
            )
        batched = x.dim() == 2
        x = x if batched else x.unsqueeze(0)
        shape = (x.shape[0], self.hidden_size)
        if hx is None:
            state = (x.new_zeros(shape),) * self.cell.num_states
        else:
            parts = (hx,) if self.cell.num_states == 1 else tuple(hx)
            if len(parts) != self.cell.num_states:
                raise TypeError("the LSTM cell's hx must be a tuple (h, c)")
            names = ("h", "c")
            state = tuple(
                _checks.state_like(name, s if batched else _unsqueeze(s), shape, x)
                for name, s in zip(names, parts, strict=False)
            )
        named = {kind: getattr(self, kind) for kind in self._kinds}
        w_ih, w_hh, b_ih, b_hh, *extra = self.cell.direction_weights(named)
        assert w_ih is not None  # every cell has an input projection
        new = self.cell.step(F.linear(x, w_ih, b_ih), state, w_hh, b_hh, *extra)
        if not batched:
            new = tuple(s.squeeze(0) for s in new)
        return new[0] if self.cell.num_states == 1 else new


def _unsqueeze(s: object) -> object:
    return s.unsqueeze(0) if isinstance(s, Tensor) else s


class RNNCell(CellBase):
    """One Elman RNN step; a drop-in for ``torch.nn.RNNCell``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(rnn_cell(nonlinearity), input_size, hidden_size, bias, device, dtype)


class GRUCell(CellBase):
    """One GRU step; a drop-in for ``torch.nn.GRUCell`` (``reset_after=False``: Cho 2014;
    ``layer_norm=True``: the layer-normalised GRU, reset-after, as the ``GRU`` layer)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        reset_after: bool = True,
        layer_norm: bool = False,
    ) -> None:
        self.reset_after = bool(reset_after)
        self.layer_norm = bool(layer_norm)
        if self.layer_norm and not self.reset_after:
            raise ValueError(
                "layer_norm=True has the reset-after form only (haste's LayerNormGRU), "
                "got reset_after=False"
            )
        cell = GRU_LN if self.layer_norm else gru_cell(self.reset_after)
        super().__init__(cell, input_size, hidden_size, bias, device, dtype)


class LSTMCell(CellBase):
    """One LSTM step; a drop-in for ``torch.nn.LSTMCell`` (``layer_norm=True``: the
    layer-normalised LSTM, as the ``LSTM`` layer)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        unit_forget_bias: bool = False,
        layer_norm: bool = False,
    ) -> None:
        self.unit_forget_bias = bool(unit_forget_bias)
        self.layer_norm = bool(layer_norm)
        cell = LSTM_LN if self.layer_norm else LSTM
        super().__init__(cell, input_size, hidden_size, bias, device, dtype)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.unit_forget_bias and self.bias_ih is not None and self.bias_hh is not None:
            set_forget_bias(self.bias_ih, self.bias_hh)


class MinGRUCell(CellBase):
    """One minGRU step (Feng et al. 2024; ``rnnkit.nn.cells.minimal``): ``weight_ih``
    [2H, D], ``bias_ih`` [2H]; hx [B, H]."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(MINGRU, input_size, hidden_size, bias, device, dtype)


class MinLSTMCell(CellBase):
    """One minLSTM step (Feng et al. 2024; ``rnnkit.nn.cells.minimal``): ``weight_ih``
    [3H, D], ``bias_ih`` [3H]; hx [B, H] (one state: no c)."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        super().__init__(MINLSTM, input_size, hidden_size, bias, device, dtype)
