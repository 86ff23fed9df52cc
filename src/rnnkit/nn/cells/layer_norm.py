"""Layer-normalised LSTM and GRU (Ba, Kiros & Hinton 2016, "Layer Normalization",
sec. 3.1 and the LSTM of its supplement), in the placement of haste's LayerNormLSTM and
LayerNormGRU (lmnt-com/haste: ``frameworks/tf/layer_norm_lstm_cell.py``,
``frameworks/tf/layer_norm_gru_cell.py``, the CPU script in
``frameworks/pytorch/layer_norm_gru.py``).

Layer norm of a row a of N numbers with a gain g [N] and a bias b [N]:

    LN(a; g, b) = g * (a - mean(a)) / sqrt(var(a) + eps) + b      var biased, eps = 1e-5

(haste's and ``torch.nn.LayerNorm``'s eps). A row is all G gate pre-activations of one
batch entry (4H for the LSTM, 3H for the GRU), not one gate's H, as in haste.

LSTM-LN (gate order i, f, g, o, as ``torch.nn.LSTM``):

    v  = LN(W x; g_ih, b_ih) + LN(U h; g_hh, b_hh)          [B, 4H]
    i, f, o = sigmoid(v_i, v_f, v_o),  g = tanh(v_g)
    c' = f * c + i * g                                      c is carried unnormalised
    h' = o * tanh(LN(c'; g_c, b_c))                         [B, H]

GRU-LN (reset-after, as haste's LayerNormGRU and ``torch.nn.GRU``; gate order r, z, n):

    px = LN(W x; g_ih, b_ih),  ph = LN(U h; g_hh, b_hh)     each [B, 3H]
    r  = sigmoid(px_r + ph_r),  z = sigmoid(px_z + ph_z)
    n  = tanh(px_n + r * ph_n)                              b_hn inside r * (.)
    h' = (1 - z) * n + z * h

Each bias is added after its normalisation (before it, the LN's mean would remove it).
Against haste: its ``gamma[0]``, ``gamma[1]`` are g_ih, g_hh; its LSTM has one bias
``bias`` (here b_ih + b_hh: two are kept for torch.nn's names and ``unit_forget_bias``),
its GRU ``bias`` and ``recurrent_bias`` are b_ih and b_hh; its ``gamma_h``, ``beta_h`` are
g_c, b_c; its gate orders (LSTM i, g, f, o; GRU z, r, n) are relabelled here to torch's.

Parameters of a layer-direction (``LayerNormCell.parameters``), torch.nn's four first:
weight_ih [G, D], weight_hh [G, H], bias_ih [G], bias_hh [G] (with ``bias``), then
ln_ih_weight [G] (g_ih), ln_hh_weight [G] (g_hh) and, for the LSTM, ln_c_weight [H] (g_c)
and ln_c_bias [H] (b_c, with ``bias``). Gains start at 1 and b_c at 0
(``LayerNormCell.initial_value``); the weights and b_ih, b_hh as in torch.nn.

The runner computes every step's gx = x W_ih^T + b_ih in one GEMM. Here the bias must
follow the norm, so ``direction_weights`` hands the runner b_ih = b_hh = None and every
parameter after the two matrices as the step's extra arguments (b_ih, b_hh, g_ih, g_hh
[, g_c, b_c], None where absent): the runner's gx is the bare W x, and the step
normalises it and adds b_ih. The fused CPU kernel (``rnnkit.nn.kernels.fused``) runs
them too, with the norms inside its time loop and the biases after them. The
hand-written BPTT is ``rnnkit.nn.reference.lstm_ln`` and ``rnnkit.nn.reference.gru_ln``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.nn.cells.base import Cell, ParamSpec, State

EPS = 1e-5
"""The layer norms' eps (haste's, ``torch.nn.LayerNorm``'s); the records pass it to the
reference as their option ``eps``."""
_START = {"ln_ih_weight": 1.0, "ln_hh_weight": 1.0, "ln_c_weight": 1.0, "ln_c_bias": 0.0}


def _norm(a: Tensor, gain: Tensor, bias: Tensor | None) -> Tensor:
    """LN(a; gain, bias) over the last axis: a [B, N], gain [N], bias [N] or None."""
    return F.layer_norm(a, a.shape[-1:], gain, bias, EPS)


# Every function below has the step's signature: (gx [B, G] = W x without bias, state,
# w_hh [G, H], the b_hh slot (None: ``LayerNormCell.direction_weights``), *extra), with
# extra = (b_ih, b_hh, g_ih, g_hh[, g_c, b_c]), each [G] ([H] for g_c, b_c) or None.


def _lstm_ln_gates(
    gx: Tensor,
    state: State,
    w_hh: Tensor,
    _none: Tensor | None,
    *extra: Tensor | None,
    h_in: Tensor | None = None,
) -> dict[str, Tensor]:
    b_ih, b_hh, g_ih, g_hh = extra[:4]
    assert g_ih is not None and g_hh is not None
    h = state[0] if h_in is None else h_in  # the h of the recurrent product (StepFn)
    uh = F.linear(h, w_hh)  # [B, H] @ [H, 4H]
    v = _norm(gx, g_ih, b_ih) + _norm(uh, g_hh, b_hh)  # [B, 4H]
    i, f, g, o = v.chunk(4, dim=1)  # each [B, H]
    return {"i": torch.sigmoid(i), "f": torch.sigmoid(f), "g": torch.tanh(g), "o": torch.sigmoid(o)}


def _lstm_ln_step(
    gx: Tensor,
    state: State,
    w_hh: Tensor,
    _none: Tensor | None,
    *extra: Tensor | None,
    h_in: Tensor | None = None,
) -> State:
    a = _lstm_ln_gates(gx, state, w_hh, _none, *extra, h_in=h_in)
    g_c, b_c = extra[4:]
    assert g_c is not None
    c_new = a["f"] * state[1] + a["i"] * a["g"]  # [B, H], carried unnormalised
    return (a["o"] * torch.tanh(_norm(c_new, g_c, b_c)), c_new)


def _gru_ln_gates(
    gx: Tensor,
    state: State,
    w_hh: Tensor,
    _none: Tensor | None,
    *extra: Tensor | None,
    h_in: Tensor | None = None,
) -> dict[str, Tensor]:
    b_ih, b_hh, g_ih, g_hh = extra
    assert g_ih is not None and g_hh is not None
    h = state[0] if h_in is None else h_in  # the h of the recurrent product (StepFn)
    x_r, x_z, x_n = _norm(gx, g_ih, b_ih).chunk(3, dim=1)  # [B, 3H] -> each [B, H]
    h_r, h_z, h_n = _norm(F.linear(h, w_hh), g_hh, b_hh).chunk(3, dim=1)  # [B, H] @ [H, 3H]
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    return {"r": r, "z": z, "n": torch.tanh(x_n + r * h_n)}  # b_hn inside r * (.)


def _gru_ln_step(
    gx: Tensor,
    state: State,
    w_hh: Tensor,
    _none: Tensor | None,
    *extra: Tensor | None,
    h_in: Tensor | None = None,
) -> State:
    a = _gru_ln_gates(gx, state, w_hh, _none, *extra, h_in=h_in)
    n, z = a["n"], a["z"]
    return (n + z * (state[0] - n),)  # == (1 - z) * n + z * h


@dataclass(frozen=True)
class LayerNormCell(Cell):
    """A cell record with layer norms on W x and U h (and, with ``norm_cell``, on the
    LSTM's c before its tanh): the parameters, their starting values and the runner's
    weight tuple as the module docstring lays out."""

    norm_cell: bool = False

    @property
    def _extra_kinds(self) -> tuple[str, ...]:
        kinds = ("bias_ih", "bias_hh", "ln_ih_weight", "ln_hh_weight")
        return kinds + (("ln_c_weight", "ln_c_bias") if self.norm_cell else ())

    def parameters(self, input_size: int, hidden_size: int, bias: bool) -> tuple[ParamSpec, ...]:
        G = self.num_gates * hidden_size
        specs = [*super().parameters(input_size, hidden_size, bias)]
        specs += [("ln_ih_weight", (G,)), ("ln_hh_weight", (G,))]
        if self.norm_cell:
            specs.append(("ln_c_weight", (hidden_size,)))
            if bias:
                specs.append(("ln_c_bias", (hidden_size,)))
        return tuple(specs)

    @property
    def standard(self) -> bool:
        return False

    def direction_weights(self, named: dict[str, Tensor]) -> tuple[Tensor | None, ...]:
        """(w_ih, w_hh, None, None, b_ih, b_hh, g_ih, g_hh[, g_c, b_c]): no bias for the
        runner's input projection; every bias follows its norm, inside the step."""
        extra = tuple(named.get(kind) for kind in self._extra_kinds)
        return (named["weight_ih"], named["weight_hh"], None, None, *extra)

    def initial_value(self, kind: str) -> float | None:
        """Gains 1, the cell norm's bias 0 (as haste and ``torch.nn.LayerNorm``)."""
        return _START.get(kind)

    def gates(
        self,
        gx: Tensor,
        state: State,
        w_hh: Tensor | None,
        b_hh: Tensor | None,
        *extra: Tensor | None,
        h_in: Tensor | None = None,
    ) -> dict[str, Tensor]:
        assert self.gate_fn is not None
        return self.gate_fn(gx, state, w_hh, b_hh, *extra, h_in=h_in)


LSTM_LN = LayerNormCell(
    "lstm_ln",
    4,
    2,
    _lstm_ln_step,
    (("eps", EPS),),
    gate_fn=_lstm_ln_gates,
    gate_names=("i", "f", "o"),
    norm_cell=True,
)
GRU_LN = LayerNormCell(
    "gru_ln",
    3,
    1,
    _gru_ln_step,
    (("eps", EPS),),
    gate_fn=_gru_ln_gates,
    gate_names=("r", "z"),
)
