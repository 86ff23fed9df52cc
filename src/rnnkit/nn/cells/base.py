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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

State = tuple[Tensor, ...]
StepFn = Callable[[Tensor, State, Tensor, "Tensor | None"], State]
"""step(gx [B, G], state (each [B, H]), w_hh [G, H], b_hh [G] or None) -> new state."""
GatesFn = Callable[[Tensor, State, Tensor, "Tensor | None"], dict[str, Tensor]]
"""gates(gx [B, G], state, w_hh [G, H], b_hh [G] or None) -> {name: activation [B, H]}."""


@dataclass(frozen=True)
class Cell:
    """A cell kind: its name, its shapes, and its composite one-step function.

    ``num_gates`` is the number of H-row blocks stacked in ``weight_ih``/``weight_hh``
    (1 for RNN, 3 for GRU, 4 for LSTM). ``num_states`` is 1 (h) or 2 (h, c); the first
    state is always the output. ``options`` are the keyword arguments that select this
    form of the cell in the reference (``nonlinearity`` or ``reset_after``).

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

    def gates(
        self, gx: Tensor, state: State, w_hh: Tensor, b_hh: Tensor | None
    ) -> dict[str, Tensor]:
        """The named activations of one step from gx [B, G] and the state before it:
        {name: [B, H]}, the same tensors ``step`` combines into the new state."""
        if self.gate_fn is None:
            raise ValueError(
                f"cell {self.name!r} has no gates; gated cells are gru, gru_reset_before, lstm"
            )
        return self.gate_fn(gx, state, w_hh, b_hh)
