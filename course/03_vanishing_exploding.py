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
# # 3. Vanishing and exploding gradients
#
# The gradient that reaches step t from a loss at step T passes through every state in
# between: $\partial h_T / \partial h_t = \prod_{k=t+1}^{T} \partial h_k / \partial h_{k-1}$.
# For a tanh RNN each factor is $\mathrm{diag}(1 - h_k^2)\, U$, so the product shrinks or
# grows geometrically with the distance $T - t$ (Bengio et al. 1994; Pascanu et al.
# 2013, section 3). This chapter computes the product from scratch, checks it against
# `rnnkit.diagnostics.jacobian_norms`, compares cells with `gradient_flow`, writes
# gradient-norm clipping by hand against rnnkit's, and trains on the adding problem
# (Hochreiter & Schmidhuber 1997) for a few seconds.
#
# Shapes: T steps, B batch, D inputs, H hidden.

# %%
import io
import tempfile
from contextlib import redirect_stderr, redirect_stdout

import matplotlib.pyplot as plt
import numpy as np
import torch

import rnnkit
from rnnkit.diagnostics import gradient_flow, jacobian_norms
from rnnkit.synthetic import AddingProblem, adding_sequences
from rnnkit.synthetic.experiment import ExperimentConfig, run_experiment
from rnnkit.synthetic.gate_init import init_gate_biases
from rnnkit.train.optim import clip_gradients

torch.manual_seed(0)
T, B, D, H = 30, 4, 2, 16
x = torch.randn(T, B, D, dtype=torch.float64)  # [T, B, D]

# %% [markdown]
# ## The Jacobian product, from scratch
#
# Run a tanh RNN, then multiply the per-step Jacobians $\mathrm{diag}(1 - h_k^2)\, U$ from
# the last step backwards and take the spectral norm (the largest singular value) of the
# product at each t. rnnkit's `jacobian_norms` computes the same by autograd on the
# layer's own run.


# %%
def scratch_jacobian_norms(layer, x):
    """||dh_T/dh_t||_2 for every t, averaged over the batch: the product of the
    per-step Jacobians diag(1 - h_k^2) U, from the last step backwards."""
    U = layer.weight_hh_l0.detach().numpy()  # [H, H]
    with torch.no_grad():
        hs = layer(x)[0].numpy()  # [T, B, H]
    norms = np.zeros(len(hs))
    for b in range(hs.shape[1]):
        J = np.eye(U.shape[0])  # dh_T/dh_T
        for t in range(len(hs) - 1, -1, -1):
            norms[t] += np.linalg.norm(J, 2)
            J = J @ (np.diag(1 - hs[t, b] ** 2) @ U)  # [H, H]: one more step back
    return norms / hs.shape[1]


curves = {}
for gain in (0.5, 1.0, 2.0):
    layer = rnnkit.RNN(D, H, dtype=torch.float64)
    with torch.no_grad():  # U = gain * an orthogonal matrix: every singular value is `gain`
        layer.weight_hh_l0.copy_(gain * torch.linalg.qr(torch.randn(H, H, dtype=torch.float64))[0])
    ours = scratch_jacobian_norms(layer, x)
    theirs = jacobian_norms(layer, x)
    np.testing.assert_allclose(theirs, ours, rtol=1e-8)
    curves[gain] = ours

# With every singular value of U at 0.5, and |1 - h^2| <= 1, the norm is at most 0.5^(T-t)
distance = np.arange(T)[::-1]  # T - 1 - t
assert np.all(curves[0.5] <= 0.5**distance * (1 + 1e-9))
assert curves[0.5][0] < curves[1.0][0] < curves[2.0][0] < 2.0 ** (T - 1)  # damped by tanh
print(
    f"||dh_T/dh_0||: gain 0.5 -> {curves[0.5][0]:.1e}, 1.0 -> {curves[1.0][0]:.1e}, 2.0 -> {curves[2.0][0]:.1e}"
)

plt.figure(figsize=(6, 3))
for gain, curve in curves.items():
    plt.semilogy(distance, curve, label=f"U = {gain} x orthogonal")
plt.xlabel("distance T - t")
plt.ylabel("||dh_T / dh_t||")
plt.legend()
plt.tight_layout()

# %% [markdown]
# With a gain of 2 the norm grows, but far slower than $2^{T-t}$ ($2^{29} \approx 5 \cdot 10^8$):
# the tanh saturates ($1 - h^2 \to 0$) and damps every factor. A ReLU RNN has no such
# brake. With $U = 1.2 I$ and positive states each factor is exactly $1.2 I$, so the
# gradient grows as $1.2^{T-t}$:

# %%
relu = rnnkit.RNN(D, H, nonlinearity="relu", dtype=torch.float64)
with torch.no_grad():
    relu.weight_hh_l0.copy_(1.2 * torch.eye(H, dtype=torch.float64))
    relu.bias_ih_l0.fill_(1.0)  # positive pre-activations: every unit stays on
    relu.weight_ih_l0.zero_()
exploding = jacobian_norms(relu, x)
np.testing.assert_allclose(exploding, 1.2**distance, rtol=1e-9)
print(f"ReLU RNN, U = 1.2 I: ||dh_T/dh_0|| = {exploding[0]:.0f} = 1.2^{T - 1}")

# %% [markdown]
# ## Gradient flow through time, cell by cell
#
# `gradient_flow` gives $\|\partial L/\partial h_t\|$ for every step on a real loss. Here
# the loss reads only the final state (the adding problem's readout, T = 50). At
# torch.nn's start every gate sits near 0.5, so a gated cell keeps about half its state
# per step and the gradient halves per step too: no better than the tanh RNN. The
# chrono start (Tallec & Ollivier 2018; `rnnkit.synthetic.gate_init`) biases the GRU's
# update gate z (the LSTM's forget gate f) towards keeping the state, and the gradient
# reaches the first steps.

# %%
problem = AddingProblem(50, variable_length=False)
batch = problem.sample_full(np.random.default_rng(0), 16)
ratios = {}
plt.figure(figsize=(6, 3))
for cell, start in (
    ("rnn_tanh", "uniform"),
    ("gru", "uniform"),
    ("gru", "chrono"),
    ("lstm", "chrono"),
):
    torch.manual_seed(0)
    layer = rnnkit.nn.recurrent_layer(cell, 2, 32)
    if start == "chrono":
        init_gate_biases(layer, "chrono", t_max=50, seed=0)
    head = torch.nn.Linear(32, 1)
    flow = gradient_flow(
        layer, batch.x, lambda out, h_n, head=head: problem.loss(head(out[-1]), batch)
    )
    ratios[cell, start] = flow.ratio()  # ||dL/dh_0|| / ||dL/dh_T-1||
    plt.semilogy(flow.norms[0, 0], label=f"{cell}, {start} start")
plt.xlabel("step t")
plt.ylabel("||dL/dh_t||")
plt.legend()
plt.tight_layout()
print({f"{cell} {start}": f"{r:.1e}" for (cell, start), r in ratios.items()})
assert ratios["gru", "chrono"] > 1e3 * ratios["gru", "uniform"]
assert ratios["lstm", "chrono"] > 1e3 * ratios["rnn_tanh", "uniform"]

# %% [markdown]
# ## Clipping the gradient's norm
#
# Pascanu et al. 2013 (algorithm 1): if the global norm $\|g\|$ of all gradients exceeds
# a threshold $c$, rescale every gradient by $c / \|g\|$. It keeps the direction and
# bounds the step an exploding gradient would take. By hand, then with the trainer's
# `clip_gradients`:

# %%
torch.manual_seed(0)
model = torch.nn.ModuleDict({"rnn": relu, "head": torch.nn.Linear(H, 1, dtype=torch.float64)})
out, _ = relu(x)
model["head"](out[-1]).pow(2).sum().backward()
params = list(model.parameters())
grads = [p.grad.clone() for p in params]

norm = torch.sqrt(sum((g**2).sum() for g in grads))  # the global L2 norm
c = 1.0
by_hand = [g * (c / norm) if norm > c else g for g in grads]

reported, clipped = clip_gradients(params, clip_norm=c, clip_value=None)
assert clipped and abs(reported - float(norm)) < 1e-9 * float(norm)
for p, g in zip(params, by_hand, strict=True):
    torch.testing.assert_close(p.grad, g)
assert abs(float(torch.sqrt(sum((p.grad**2).sum() for p in params))) - c) < 1e-9
print(f"global norm {float(norm):.3g} clipped to {c}: by hand == rnnkit.train.optim.clip_gradients")

# %% [markdown]
# ## The adding problem, on a tiny budget
#
# Each step is a pair (value, marker); two values are marked, and the target at the end
# is $0.5 + (X_1 + X_2)/4$. A model that ignores the markers can do no better than
# predicting 0.5, with mean squared error $\mathrm{Var}((X_1 + X_2)/4) = 2 \cdot \tfrac13 / 16 = 1/24$.
# First the data against its definition, then a GRU trained on 16,000 sequences of T = 20
# (about 7 seconds on one core)
# (chrono gate start, Tallec & Ollivier 2018); `docs/vanishing_gradients.md` has the long
# runs (T up to 400) and the cells side by side.

# %%
xs, lengths, target = adding_sequences(np.random.default_rng(1), 2000, 20, variable_length=False)
marked = xs[:, :, 1] == 1.0  # [T, B]
assert (marked.sum(0) == 2).all()
np.testing.assert_allclose(target, 0.5 + (xs[:, :, 0] * marked).sum(0) / 4)
baseline = float(((target - 0.5) ** 2).mean())
print(f"the constant 0.5's MSE: {baseline:.4f} (1/24 = {1 / 24:.4f})")
assert abs(baseline - 1 / 24) < 0.005

config = ExperimentConfig(
    task="adding",
    size=20,
    cell="gru",
    hidden_size=32,
    lr=3e-3,
    max_sequences=16_000,  # a fixed budget in sequences, so the result is the machine's own
    max_seconds=600,
    eval_every=640,
    eval_size=500,
    seed=0,
)
log = io.StringIO()  # the trainer's line per evaluation; the last one is printed below
with tempfile.TemporaryDirectory() as out, redirect_stdout(log), redirect_stderr(log):
    result, trained, run_dir = run_experiment(config, out)
print(log.getvalue().strip().splitlines()[-1])
final = result.final()
print(
    f"after {result.sequences} sequences ({result.seconds:.0f} s): MSE {final['mse']:.4f}, "
    f"accuracy {final['accuracy']:.2f} ({result.stopped})"
)
assert final["mse"] < baseline / 4, (
    "the GRU should beat the marker-blind baseline well within 16,000 sequences"
)
