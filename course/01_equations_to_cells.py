# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. From equations to a cell
#
# A recurrent cell is one function, applied at every step: it reads the input $x_t$ and
# the state it carried from the step before, and returns the next state. This chapter
# writes the classic cells from their equations in NumPy, runs them over a sequence, and
# checks them against rnnkit's layers (and `torch.nn`'s) to 1e-12.
#
# Shapes, named once: **T** time steps, **B** batch, **D** input features, **H** hidden
# units, **G** gate rows (H for the RNN, 3H for the GRU, 4H for the LSTM). Weights are laid
# out as `torch.nn` lays them: `weight_ih` W [G, D], `weight_hh` U [G, H], `bias_ih`
# and `bias_hh` [G] each, the gates stacked in blocks of H rows.

# %%
import numpy as np
import torch

import rnnkit
from rnnkit.nn import CELLS

torch.manual_seed(0)
T, B, D, H = 7, 3, 5, 4
rng = np.random.default_rng(0)
x = rng.standard_normal((T, B, D))  # [T, B, D]
h0 = rng.standard_normal((B, H)) * 0.5  # [B, H]


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def weights(layer):
    """A one-layer rnnkit layer's parameters as float64 NumPy arrays, by torch.nn name."""
    return {name[: -len("_l0")]: p.detach().numpy() for name, p in layer.named_parameters()}


def unroll(step, x, state):
    """Apply a one-step function at every t: x [T, B, D] -> outputs [T, B, H], state."""
    ys = []
    for x_t in x:
        state = step(x_t, state)
        ys.append(state[0])
    return np.stack(ys), state


# %% [markdown]
# ## The Elman RNN
#
# $$h_t = \phi(W x_t + b_i + U h_{t-1} + b_h), \qquad \phi \in \{\tanh, \mathrm{ReLU}\}$$
#
# One gate block (G = H). The from-scratch step is one line; rnnkit's layer is a
# drop-in for `torch.nn.RNN` with the same arguments and parameter names.


# %%
def rnn_step(w, act):
    def step(x_t, state):
        (h,) = state
        return (act(x_t @ w["weight_ih"].T + w["bias_ih"] + h @ w["weight_hh"].T + w["bias_hh"]),)

    return step


def relu(a):
    return np.maximum(a, 0.0)


for nonlinearity, act in (("tanh", np.tanh), ("relu", relu)):
    layer = rnnkit.RNN(D, H, nonlinearity=nonlinearity, dtype=torch.float64)
    ys, (h_T,) = unroll(rnn_step(weights(layer), act), x, (h0,))
    out, h_n = layer(torch.from_numpy(x), torch.from_numpy(h0)[None])  # [T, B, H], [1, B, H]
    np.testing.assert_allclose(out.detach().numpy(), ys, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_n[0].detach().numpy(), h_T, rtol=1e-12, atol=1e-12)
    # torch.nn.RNN loads the same state_dict and agrees too
    reference = torch.nn.RNN(D, H, nonlinearity=nonlinearity, dtype=torch.float64)
    reference.load_state_dict(layer.state_dict())
    torch.testing.assert_close(reference(torch.from_numpy(x))[0], layer(torch.from_numpy(x))[0])
    print(
        f"rnn_{nonlinearity}: from scratch == rnnkit.RNN == torch.nn.RNN, output {tuple(out.shape)}"
    )

# %% [markdown]
# ## The GRU, in both published forms
#
# Gate order (r, z, n), as `torch.nn.GRU`:
#
# $$r = \sigma(W_r x + b_{ir} + U_r h + b_{hr}), \quad z = \sigma(W_z x + b_{iz} + U_z h + b_{hz})$$
#
# - **reset-after** (cuDNN, `torch.nn.GRU`, rnnkit's default `gru`):
#   $n = \tanh(W_n x + b_{in} + r \odot (U_n h + b_{hn}))$
# - **reset-before** (Cho et al. 2014, eq. 8; `reset_after=False`, `gru_reset_before`):
#   $n = \tanh(W_n x + b_{in} + U_n (r \odot h) + b_{hn})$
#
# and in both, $h' = (1 - z) \odot n + z \odot h$. Reset-after computes $U_n h$ in the
# same matrix product as $U_r h$ and $U_z h$; reset-before needs $r$ first, so each step
# has two dependent products. They are different functions of the same weights.


# %%
def gru_step(w, reset_after):
    U, b_h = w["weight_hh"], w["bias_hh"]

    def step(x_t, state):
        (h,) = state
        gx = x_t @ w["weight_ih"].T + w["bias_ih"]  # [B, D] @ [D, 3H] -> [B, 3H]
        gh = h @ U.T + b_h  # [B, H] @ [H, 3H] -> [B, 3H]
        r = sigmoid(gx[:, :H] + gh[:, :H])
        z = sigmoid(gx[:, H : 2 * H] + gh[:, H : 2 * H])
        if reset_after:
            n = np.tanh(gx[:, 2 * H :] + r * gh[:, 2 * H :])
        else:
            n = np.tanh(gx[:, 2 * H :] + (r * h) @ U[2 * H :].T + b_h[2 * H :])
        return ((1 - z) * n + z * h,)

    return step


gru_after = rnnkit.GRU(D, H, dtype=torch.float64)  # reset_after=True, the default
gru_before = rnnkit.GRU(D, H, reset_after=False, dtype=torch.float64)
gru_before.load_state_dict(gru_after.state_dict())  # the same weights in both forms
outputs = {}
for reset_after, layer in ((True, gru_after), (False, gru_before)):
    ys, _ = unroll(gru_step(weights(layer), reset_after), x, (h0,))
    out, _ = layer(torch.from_numpy(x), torch.from_numpy(h0)[None])
    np.testing.assert_allclose(out.detach().numpy(), ys, rtol=1e-12, atol=1e-12)
    outputs[reset_after] = ys
    print(f"reset_after={reset_after}: from scratch == rnnkit.GRU")

gap = np.abs(outputs[True] - outputs[False]).max()
assert gap > 1e-3, "the two forms must differ on the same weights"
print(f"same weights, the two forms differ by up to {gap:.3f}")

# torch.nn.GRU is the reset-after form
torch_gru = torch.nn.GRU(D, H, dtype=torch.float64)
torch_gru.load_state_dict(gru_after.state_dict())
np.testing.assert_allclose(
    torch_gru(torch.from_numpy(x), torch.from_numpy(h0)[None])[0].detach().numpy(),
    outputs[True],
    rtol=1e-12,
    atol=1e-12,
)

# %% [markdown]
# ### The textbook's update is the same cell with z relabelled
#
# Courses (the deep learning specialisation's $\Gamma_u$, Chung et al. 2014) write
# $h' = z \odot \tilde h + (1 - z) \odot h$: z keeps the **new** candidate where rnnkit's
# (and torch's) z keeps the **old** state. Since $1 - \sigma(a) = \sigma(-a)$, the textbook
# cell with update-gate weights $(W_z, U_z, b_z)$ is rnnkit's cell with those weights
# negated. Nothing is gained or lost in expressive power: below, the textbook GRU
# (reset-before, as the course writes it) on negated z weights equals rnnkit's.


# %%
def textbook_gru_step(w):
    """Cho et al.'s GRU as the course writes it: Γu keeps the candidate."""
    U, W = w["weight_hh"], w["weight_ih"]
    b = w["bias_ih"] + w["bias_hh"]

    def step(x_t, state):
        (h,) = state
        gamma_r = sigmoid(x_t @ W[:H].T + h @ U[:H].T + b[:H])
        gamma_u = sigmoid(x_t @ W[H : 2 * H].T + h @ U[H : 2 * H].T + b[H : 2 * H])
        h_tilde = np.tanh(x_t @ W[2 * H :].T + (gamma_r * h) @ U[2 * H :].T + b[2 * H :])
        return (gamma_u * h_tilde + (1 - gamma_u) * h,)

    return step


gru = rnnkit.GRU(D, H, reset_after=False, dtype=torch.float64)
textbook = weights(gru)
for name in textbook:
    textbook[name] = textbook[name].copy()
    textbook[name][H : 2 * H] *= -1  # z's rows of W, U and both biases: relabel z as 1 - z
ys_textbook, _ = unroll(textbook_gru_step(textbook), x, (h0,))
out, _ = gru(torch.from_numpy(x), torch.from_numpy(h0)[None])
np.testing.assert_allclose(out.detach().numpy(), ys_textbook, rtol=1e-12, atol=1e-12)
# and without the relabelling they are different cells
ys_plain, _ = unroll(textbook_gru_step(weights(gru)), x, (h0,))
assert np.abs(ys_plain - out.detach().numpy()).max() > 1e-3
print("textbook GRU on negated z weights == rnnkit.GRU(reset_after=False)")

# %% [markdown]
# ## The LSTM
#
# Gate order (i, f, g, o), as `torch.nn.LSTM`; two states, h and c:
#
# $$c' = f \odot c + i \odot g, \qquad h' = o \odot \tanh(c')$$
#
# with $i, f, o$ sigmoid gates and $g$ the tanh candidate. The cell state $c$ is carried
# through a sum, scaled only by the forget gate: the path the vanishing-gradient chapter
# is about.


# %%
def lstm_step(w):
    def step(x_t, state):
        h, c = state
        a = x_t @ w["weight_ih"].T + w["bias_ih"] + h @ w["weight_hh"].T + w["bias_hh"]  # [B, 4H]
        i, f, g, o = (
            sigmoid(a[:, :H]),
            sigmoid(a[:, H : 2 * H]),
            np.tanh(a[:, 2 * H : 3 * H]),
            sigmoid(a[:, 3 * H :]),
        )
        c = f * c + i * g
        return (o * np.tanh(c), c)

    return step


c0 = rng.standard_normal((B, H)) * 0.5
lstm = rnnkit.LSTM(D, H, dtype=torch.float64)
ys, (h_T, c_T) = unroll(lstm_step(weights(lstm)), x, (h0, c0))
out, (h_n, c_n) = lstm(
    torch.from_numpy(x), (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None])
)
np.testing.assert_allclose(out.detach().numpy(), ys, rtol=1e-12, atol=1e-12)
np.testing.assert_allclose(c_n[0].detach().numpy(), c_T, rtol=1e-12, atol=1e-12)
torch_lstm = torch.nn.LSTM(D, H, dtype=torch.float64)
torch_lstm.load_state_dict(lstm.state_dict())
torch.testing.assert_close(torch_lstm(torch.from_numpy(x))[0], lstm(torch.from_numpy(x))[0])
print(
    f"LSTM: from scratch == rnnkit.LSTM == torch.nn.LSTM; h {tuple(h_n.shape)}, c {tuple(c_n.shape)}"
)

# %% [markdown]
# ## The cell records: shapes named once
#
# In rnnkit each cell kind is a `Cell` record (`rnnkit.nn.cells`): its gate count, its
# states, its parameters' names and shapes, and `Cell.gates`, the named activations of
# one step, which the step itself is built on. Every layer feature (depth, directions,
# lengths) comes from one time loop over these records.

# %%
for name in ("rnn_tanh", "rnn_relu", "gru", "gru_reset_before", "lstm"):
    cell = CELLS[name]
    shapes = dict(cell.parameters(D, H, True))
    print(f"{name:17s} gates {cell.num_gates}  states {cell.state_sizes(H)}  {shapes}")
    assert shapes["weight_ih"] == (cell.num_gates * H, D)  # [G, D]
    assert shapes["weight_hh"] == (cell.num_gates * H, H)  # [G, H]

# Cell.gates gives one step's activations by name; the from-scratch r and z agree
w = weights(gru_after)
x_0 = torch.from_numpy(x[0])
gx = x_0 @ gru_after.weight_ih_l0.T + gru_after.bias_ih_l0  # [B, 3H]
gates = CELLS["gru"].gates(
    gx, (torch.from_numpy(h0),), gru_after.weight_hh_l0, gru_after.bias_hh_l0
)
r_scratch = sigmoid(
    x[0] @ w["weight_ih"][:H].T + w["bias_ih"][:H] + h0 @ w["weight_hh"][:H].T + w["bias_hh"][:H]
)
np.testing.assert_allclose(gates["r"].detach().numpy(), r_scratch, rtol=1e-12)
print("Cell.gates:", {k: tuple(v.shape) for k, v in gates.items()})
