"""What every part of rnnkit needs to know about a cell kind, and nothing more.

Shape legend used throughout rnnkit:
    T time steps, B batch, D input features, H hidden units,
    G = num_gates * H gate rows of a weight matrix.

A cell is defined once, as a ``Cell`` record. Three implementations follow that one
definition and are tested against each other:

* ``step``: the composite PyTorch step (autograd does the backward), any device/dtype;
* ``rnnkit.nn.reference.<cell>``: NumPy forward and hand-written BPTT (the textbook);
* ``rnnkit.nn.kernels``: fused kernels over a whole sequence (registered there).

Every cell consumes the input projection ``gx = x @ W_ih.T + b_ih`` rather than ``x``:
the projection does not depend on the state, so the time-loop runner computes it for
all T steps at once as one GEMM before the loop.

The record also describes a layer-direction's parameters (``parameters``: torch.nn's
names and shapes, in torch.nn's order) and its state sizes (``state_sizes``), so layers,
the runner, the kernels' dispatch and the diagnostics stay generic over them: a variant
that adds a parameter or changes a state's size (the LSTM's ``proj_size``) changes the
record, not the layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

State = tuple[Tensor, ...]
StepFn = Callable[..., State]
"""step(gx [B, G], state, w_hh [G, R], b_hh [G] or None, *extra, h_in=None) -> new state;
the state's sizes are ``Cell.state_sizes`` (R = the first, h's), ``extra`` the record's
parameters beyond the standard four, in its order (the LSTM's projection ``weight_hr``
[P, H]). ``h_in`` [B, R] is the h that enters the recurrent product ``w_hh h``
(``F.linear(h_in, w_hh)``), state[0] when None; the runner passes ``h_in = m * h`` under
recurrent dropout (``rnnkit.nn.noise``), and everything else in the step (the GRU's
``z * h``, the carried state) reads the state's own h. A step must accept ``h_in`` by
keyword; the runner passes it only when a recurrent mask is in force (never for a cell
that is not ``recurrent``: w_hh is None there)."""
GatesFn = Callable[..., dict[str, Tensor]]
"""gates(gx [B, G], state, w_hh [G, R], b_hh [G] or None, *extra, h_in=None) -> {name:
activation [B, H]}; ``extra`` and ``h_in`` as in ``StepFn``; w_hh is None for a cell that
is not ``recurrent``."""
ScanTermsFn = Callable[[Tensor], tuple[Tensor, Tensor]]
"""scan_terms(gx [T, B, G]) -> (log a, log b), each [T, B, H]: the recurrence
h_t = a_t * h_{t-1} + b_t of a cell whose gates read x_t only, in log space (b > 0)."""
ParamSpec = tuple[str, tuple[int, ...]]
"""(torch.nn's name without the ``_l{k}{_reverse}`` suffix, shape)."""
STANDARD_PARAMETERS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass(frozen=True)
class Cell:
    """A cell kind: its name, its shapes, and its composite one-step function.

    ``num_gates`` is the number of H-row blocks stacked in ``weight_ih``/``weight_hh``
    (1 for RNN, 3 for GRU, 4 for LSTM; 2 and 3 for minGRU and minLSTM, ``weight_ih``
    only). ``num_states`` is 1 (h) or 2 (h, c); the first state is always the output.
    ``options`` are the keyword arguments that select this form of the cell in the
    reference (``nonlinearity``, ``reset_after`` or ``lstm``).
    ``proj_size`` (LSTM only, torch.nn.LSTM's argument; ``lstm_cell(proj_size)``) makes
    h a projection to P < H units: see ``parameters`` and ``state_sizes``.

    A gated cell also has ``gate_fn``: the activations of one step, by name, in weight
    order (GRU r, z, n; LSTM i, f, g, o). Its ``step`` is built on it, so the gate
    equations are written once; ``gate_names`` are the sigmoid gates among them (the
    ones that open and close: GRU r, z; LSTM i, f, o).
    """

    name: str
    num_gates: int
    num_states: int
    step: StepFn
    options: tuple[tuple[str, object], ...] = ()
    torch_mode: str | None = None
    """The ``torch.nn`` mode string of the same cell, or None where torch lacks it."""
    gate_fn: GatesFn | None = None
    gate_names: tuple[str, ...] = ()
    proj_size: int = 0
    scan_terms: ScanTermsFn | None = None
    """For a cell whose gates read x_t only (minGRU, minLSTM; ``cells/minimal.py``): its
    recurrence as the log-space terms a parallel scan takes. Such a cell has no recurrent
    weights (``weight_hh``, ``bias_hh``): its step receives None for them."""

    @property
    def recurrent(self) -> bool:
        """True if the gates read h_{t-1}, through ``weight_hh`` (every cell but the
        parallel-scan ones)."""
        return self.scan_terms is None

    @property
    def label(self) -> str:
        """The name, with the options that change its parameters (for messages)."""
        return self.name + (f" with proj_size={self.proj_size}" if self.proj_size else "")

    def state_sizes(self, hidden_size: int) -> tuple[int, ...]:
        """The size of each state, h first: (H,), (H, H), or (P, H) with a projection."""
        h = self.proj_size or hidden_size
        return (h,) + (hidden_size,) * (self.num_states - 1)

    def output_size(self, hidden_size: int) -> int:
        """The size of one direction's output (= h's): what the next layer reads."""
        return self.state_sizes(hidden_size)[0]

    def parameters(self, input_size: int, hidden_size: int, bias: bool) -> tuple[ParamSpec, ...]:
        """One layer-direction's parameters, as torch.nn names and lays them out, in its
        order (so a state_dict and ``all_weights`` match torch.nn's): weight_ih [G, D],
        weight_hh [G, R], bias_ih [G], bias_hh [G] (with ``bias``), then the extras
        (weight_hr [P, H] with a projection); G = num_gates * H, R = h's size. A cell
        that is not ``recurrent`` has weight_ih and bias_ih only."""
        G = self.num_gates * hidden_size
        specs: list[ParamSpec] = [("weight_ih", (G, input_size))]
        if self.recurrent:
            specs.append(("weight_hh", (G, self.output_size(hidden_size))))
        if bias:
            specs.append(("bias_ih", (G,)))
        if bias and self.recurrent:
            specs.append(("bias_hh", (G,)))
        if self.proj_size:
            specs.append(("weight_hr", (self.proj_size, hidden_size)))
        return tuple(specs)

    @property
    def standard(self) -> bool:
        """True if the parameters are the standard four and every state is [B, H]: the
        layout the fused kernels implement."""
        return self.proj_size == 0 and self.recurrent

    def direction_weights(self, named: dict[str, Tensor]) -> tuple[Tensor | None, ...]:
        """A layer-direction's parameters by kind -> the tuple the runner and the kernels
        take: (w_ih, w_hh, b_ih, b_hh, *extra), None for an absent standard one."""
        standard = tuple(named.get(kind) for kind in STANDARD_PARAMETERS)
        return standard + tuple(t for k, t in named.items() if k not in STANDARD_PARAMETERS)

    def initial_value(self, kind: str) -> float | None:
        """The constant a parameter starts at, or None for torch.nn's uniform draw (every
        parameter of these cells; a layer norm's gain starts at 1: ``cells.layer_norm``)."""
        return None

    def gates(
        self,
        gx: Tensor,
        state: State,
        w_hh: Tensor | None,
        b_hh: Tensor | None,
        *extra: Tensor | None,
        h_in: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The named activations of one step from gx [B, G] and the state before it:
        {name: [B, H]}, the same tensors ``step`` combines into the new state. ``extra``
        are the step's further parameters (``direction_weights``); these cells' gates do
        not read them (the LSTM's projection acts after its gates). ``h_in``: the h of the
        recurrent product, as in ``StepFn``."""
        if self.gate_fn is None:
            raise ValueError(
                f"cell {self.name!r} has no gates; gated cells are gru, gru_reset_before, "
                "lstm, lstm_ln, gru_ln, mingru, minlstm"
            )
        if h_in is None:  # (a cell without a recurrent product takes no h_in)
            return self.gate_fn(gx, state, w_hh, b_hh)
        return self.gate_fn(gx, state, w_hh, b_hh, h_in=h_in)
