"""How a synthetic experiment starts its gate biases: the memory a gated cell has before
it has learned anything.

torch.nn draws every bias from U(-1/sqrt(H), 1/sqrt(H)), so every gate starts near 0.5:
an LSTM keeps about half of c per step (f ~ 0.5) and a GRU half of h (z ~ 0.5). A signal
t steps back reaches the read-out scaled by about 0.5^t, and so does its gradient: at
the adding problem's T = 200 the gradient at the first step is below float32's smallest
normal number (docs/vanishing_gradients.md, section 2b), and no optimiser, learning rate
or budget can follow a gradient that is not there. Three starts:

    uniform   torch.nn's, unchanged.
    forget1   the LSTM's total forget bias b_f = b_if + b_hf = 1 (Gers, Schmidhuber and
              Cummins 2000; Jozefowicz, Zaremba and Sutskever 2015, section 3): f ~ 0.73,
              a memory of about 4 steps. The GRU has no forget gate here: unchanged.
    chrono    Tallec and Ollivier 2018, "Can recurrent neural networks warp time?"
              (ICLR; their "chrono initialization"): per unit,

                  b_f ~ log U([1, T_max - 1]),   b_i = -b_f          (LSTM)
                  b_z ~ log U([1, T_max - 1])                         (GRU, both forms)

              Where the gate's input terms are small, a unit keeps f = sigmoid(b_f)
              = 1 - 1/tau of its state per step and writes i = 1/tau of the new one,
              tau = 1 + exp(b_f) uniform in [2, T_max]: a leaky integrator whose time
              constants spread over the dependencies to be learned. The negative input
              bias also keeps the cell from drifting before it has learned what to
              store (Hochreiter and Schmidhuber 1997, "internal state drift", and
              section 5.4: their adding-problem LSTM had no forget gate, f = 1, and
              input gates biased negative). torch.nn's GRU keeps h with weight z
              (h' = (1 - z) n + z h), so its update gate takes the forget gate's place,
              with the same sign.

Every start sets the total bias (b_ih + b_hh) of the gates it names by writing b_ih and
zeroing b_hh, in every layer and direction; the other weights keep torch.nn's draw.
Cells without gates (rnn_tanh, rnn_relu) have no gate bias: every start leaves them as
they are. The draws come from a generator of their own, so a model with one start
differs from the same seed's model with another only in these biases.
"""

from __future__ import annotations

import torch

from rnnkit.nn.cells import CELLS
from rnnkit.nn.layers import RNNBase

GATE_INITS = ("chrono", "forget1", "uniform")

_GATE_BLOCKS = {  # cell -> (block index of the memory gate, of the LSTM's input gate)
    "lstm": (1, 0),  # i, f, g, o
    "gru": (1, None),  # r, z, n
    "gru_reset_before": (1, None),
}


def check_gate_init(gate_init: str, cell: str) -> None:
    """One clear error for a start this module does not know, or for a gated cell whose
    gate layout it does not know (``cell`` a name in ``CELLS``)."""
    if gate_init not in GATE_INITS:
        raise ValueError(f"gate_init must be one of {', '.join(GATE_INITS)}, got {gate_init!r}")
    gated = cell in CELLS and bool(CELLS[cell].gate_names)
    if gate_init != "uniform" and gated and cell not in _GATE_BLOCKS:
        raise ValueError(
            f"gate_init {gate_init!r} knows the gates of {', '.join(_GATE_BLOCKS)}, not of "
            f"cell {cell!r}; use gate_init 'uniform'"
        )


@torch.no_grad()
def init_gate_biases(rnn: RNNBase, gate_init: str, t_max: int, seed: int) -> None:
    """Set the gate biases of every layer-direction of ``rnn`` as ``gate_init`` says
    (module docstring); ``t_max`` is chrono's T_max, the longest dependency to learn
    (at least 2); ``seed`` seeds chrono's draws."""
    cell = rnn.cell.name
    check_gate_init(gate_init, cell)
    if gate_init == "uniform" or cell not in _GATE_BLOCKS:
        return
    if t_max < 2:
        raise ValueError(f"chrono's t_max must be >= 2, got {t_max!r}")
    memory, write = _GATE_BLOCKS[cell]
    if gate_init == "forget1" and write is None:
        return  # a GRU has no forget gate to set to 1
    H = rnn.hidden_size
    generator = torch.Generator().manual_seed(seed)
    for weights in rnn.all_weights:
        b_ih, b_hh = weights[2], weights[3]  # [G] each, G = num_gates * H
        if gate_init == "forget1":
            b = torch.ones(H)
        else:  # log U([1, T_max - 1]); at T_max = 2 every unit gets log 1 = 0
            b = torch.empty(H).uniform_(1.0, max(1.0, t_max - 1.0), generator=generator).log()
        b_ih[memory * H : (memory + 1) * H] = b
        b_hh[memory * H : (memory + 1) * H] = 0.0
        if gate_init == "chrono" and write is not None:
            b_ih[write * H : (write + 1) * H] = -b
            b_hh[write * H : (write + 1) * H] = 0.0
