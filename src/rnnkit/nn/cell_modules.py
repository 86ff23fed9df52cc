"""Single-step cell modules: drop-ins for ``torch.nn.RNNCell/GRUCell/LSTMCell``.

They apply one ``rnnkit.nn.cells`` step; use them to write your own time loop (for
example a decoder that feeds back its own output).

The layers' recurrent regularisers (``rnnkit.nn.noise``; keyword-only, off by default, so
the modules stay drop-ins) act on each step as they do in a layer:

* ``recurrent_dropout`` p: ``W_hh (m * h_{t-1})`` with one mask m [B, R] per sequence
  (Gal & Ghahramani 2016, sec. 4);
* ``weight_drop`` p: the step runs on ``M * weight_hh``, M [G, R] (Merity et al. 2017);
* ``zoneout`` p (a number, or (p_h, p_c) for the LSTM): ``s_t = k * s_{t-1} + (1 - k) *
  s_new`` with k ~ Bernoulli(p) [B, size] drawn at every step in training, k = p in
  evaluation (Krueger et al. 2016).

A module sees one step, not the sequence, so the per-sequence masks (m and M) are drawn by
the loop's owner once per sequence, ``noise = cell.draw_noise(B)``, and passed to every
step, ``cell(x_t, h, noise=noise)``. ``draw_noise`` gives None in evaluation and when
neither rate is set, so the same loop runs there without masks; a training step of a cell
with either rate and no ``noise`` is refused. Zoneout needs no masks from the caller.
Draw order (torch's default generator, as a layer's ``noise.draw``): ``draw_noise`` the
weight mask, then the recurrent mask; each training step its zoneout masks in state order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.common import checks as _checks
from rnnkit.nn import noise as _noise
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


@dataclass(frozen=True)
class CellNoise:
    """One sequence's masks for a cell module (``CellBase.draw_noise``): ``recurrent``
    [B, R] on h where it enters the recurrent product, ``weight_hh`` [G, R] on the
    recurrent weight; each None where its rate is 0. Values 0 or 1/(1-p)."""

    recurrent: Tensor | None = None
    weight_hh: Tensor | None = None


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
        *,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float | tuple[float, ...] = 0.0,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.bias = bool(bias)
        self.recurrent_dropout = _checks.probability("recurrent_dropout", recurrent_dropout)
        self.weight_drop = _checks.probability("weight_drop", weight_drop)
        self.zoneout = _noise.zoneout_rates(zoneout, ("h", "c")[: cell.num_states])
        if (self.recurrent_dropout or self.weight_drop) and not cell.recurrent:
            name = "recurrent_dropout" if self.recurrent_dropout else "weight_drop"
            raise ValueError(
                f"{name} needs a recurrent product, which cell {cell.label!r} lacks "
                "(its gates read x_t only); use zoneout"
            )
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
        text = f"{self.input_size}, {self.hidden_size}, cell={self.cell.name}, bias={self.bias}"
        for name in ("recurrent_dropout", "weight_drop"):
            if getattr(self, name):
                text += f", {name}={getattr(self, name)}"
        if any(self.zoneout):
            same = len(set(self.zoneout)) == 1
            text += f", zoneout={self.zoneout[0] if same else self.zoneout}"
        return text

    def draw_noise(self, batch_size: int) -> CellNoise | None:
        """The masks of one sequence of ``batch_size`` rows, to pass to each of its steps
        (``forward(..., noise=)``); None in evaluation or when neither
        ``recurrent_dropout`` nor ``weight_drop`` is set."""
        B = _checks.positive_int("batch_size", batch_size)
        if not self.training or not (self.recurrent_dropout or self.weight_drop):
            return None
        like = self.weight_ih
        w_hh = self.weight_hh
        assert w_hh is not None  # the constructor refuses both rates without one
        return CellNoise(
            weight_hh=_noise.dropout_mask(w_hh.shape, self.weight_drop, like),  # [G, R]
            recurrent=_noise.dropout_mask((B, w_hh.shape[1]), self.recurrent_dropout, like),
        )

    def forward(self, input: Tensor, hx=None, *, noise: CellNoise | None = None):
        """input [B, D] or [D]; hx [B, H] (a tuple (h, c) for the LSTM) -> the new state.
        ``noise``: this sequence's masks from ``draw_noise`` (the module docstring)."""
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
        h_in = None
        if noise is not None:
            w_hh, h_in = self._masked(noise, w_hh, state[0])
        elif self.training and (self.recurrent_dropout or self.weight_drop):
            raise ValueError(
                f"this {self.cell.name} cell has recurrent_dropout={self.recurrent_dropout} "
                f"and weight_drop={self.weight_drop}, whose masks are one per sequence: draw "
                "them with noise = cell.draw_noise(batch_size) at the start of the sequence "
                "and pass noise= to every step (evaluation needs none)"
            )
        gx = F.linear(x, w_ih, b_ih)  # [B, G]
        if h_in is None:
            new = self.cell.step(gx, state, w_hh, b_hh, *extra)
        else:
            new = self.cell.step(gx, state, w_hh, b_hh, *extra, h_in=h_in)
        if any(self.zoneout):
            new = self._zoned(new, state)
        if not batched:
            new = tuple(s.squeeze(0) for s in new)
        return new[0] if self.cell.num_states == 1 else new

    def _masked(self, noise: CellNoise, w_hh: Tensor | None, h: Tensor):
        """(M * w_hh, m * h) for the masks given (either may be None), their shapes checked."""
        if not isinstance(noise, CellNoise):
            raise TypeError(
                f"noise must be a CellNoise from cell.draw_noise, got {type(noise).__name__}"
            )
        given = noise.recurrent is not None or noise.weight_hh is not None
        if w_hh is None and given:
            raise ValueError(f"cell {self.cell.label!r} has no recurrent product to mask")
        h_in = None
        if noise.weight_hh is not None:
            assert w_hh is not None
            _checks.state_like("noise.weight_hh", noise.weight_hh, tuple(w_hh.shape), w_hh)
            w_hh = w_hh * noise.weight_hh  # [G, R]; a new tensor: the parameter is not written
        if noise.recurrent is not None:
            h_in = h * _checks.state_like("noise.recurrent", noise.recurrent, tuple(h.shape), h)
        return w_hh, h_in

    def _zoned(self, new: tuple[Tensor, ...], old: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Zoneout after one step, as the layers' runner applies it (``StepNoise.zoned``)
        with this step's keep-masks (``noise.zoneout_mask`` at T = 1, state order)."""
        B = new[0].shape[0]
        masks = tuple(
            _noise.zoneout_mask(1, B, n.shape[1], p, self.training, n)
            for n, p in zip(new, self.zoneout, strict=True)
        )
        return _noise.StepNoise(zoneout=masks).zoned(0, new, old)


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
        *,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float | tuple[float, ...] = 0.0,
    ) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(
            rnn_cell(nonlinearity),
            input_size,
            hidden_size,
            bias,
            device,
            dtype,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
        )


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
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float | tuple[float, ...] = 0.0,
    ) -> None:
        self.reset_after = bool(reset_after)
        self.layer_norm = bool(layer_norm)
        if self.layer_norm and not self.reset_after:
            raise ValueError(
                "layer_norm=True has the reset-after form only (haste's LayerNormGRU), "
                "got reset_after=False"
            )
        cell = GRU_LN if self.layer_norm else gru_cell(self.reset_after)
        super().__init__(
            cell,
            input_size,
            hidden_size,
            bias,
            device,
            dtype,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
        )


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
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float | tuple[float, ...] = 0.0,
    ) -> None:
        self.unit_forget_bias = bool(unit_forget_bias)
        self.layer_norm = bool(layer_norm)
        cell = LSTM_LN if self.layer_norm else LSTM
        super().__init__(
            cell,
            input_size,
            hidden_size,
            bias,
            device,
            dtype,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
        )

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.unit_forget_bias and self.bias_ih is not None and self.bias_hh is not None:
            set_forget_bias(self.bias_ih, self.bias_hh)


class MinGRUCell(CellBase):
    """One minGRU step (Feng et al. 2024; ``rnnkit.nn.cells.minimal``): ``weight_ih``
    [2H, D], ``bias_ih`` [2H]; hx [B, H]."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        # a nonzero recurrent_dropout or weight_drop is refused (no recurrent product)
        super().__init__(
            MINGRU,
            input_size,
            hidden_size,
            bias,
            device,
            dtype,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
        )


class MinLSTMCell(CellBase):
    """One minLSTM step (Feng et al. 2024; ``rnnkit.nn.cells.minimal``): ``weight_ih``
    [3H, D], ``bias_ih`` [3H]; hx [B, H] (one state: no c)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        # a nonzero recurrent_dropout or weight_drop is refused (no recurrent product)
        super().__init__(
            MINLSTM,
            input_size,
            hidden_size,
            bias,
            device,
            dtype,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
        )
