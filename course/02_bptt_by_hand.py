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
# # 2. Backpropagation through time, by hand
#
# Training a recurrent net needs the gradient of a loss with respect to every weight,
# through every step. Backpropagation through time (BPTT) is the chain rule applied to
# the unrolled loop, last step first: each step receives $\partial L / \partial h_t$ from
# its output and from the step after it, and passes $\partial L / \partial h_{t-1}$ back.
#
# This chapter writes the GRU's backward by hand in NumPy (the reset-before form of Cho
# et al. 2014, the one courses derive), checks it against rnnkit's reference
# (`rnnkit.nn.reference.gru`, the library's gradient-checked oracle), against torch's
# autograd on `rnnkit.GRU`, and against finite differences. Then it makes the classic
# slip on purpose and shows the finite-difference check catching it.
#
# Shapes: T steps, B batch, D inputs, H hidden; gate order (r, z, n) in blocks of H rows.

# %%
import numpy as np
import torch

import rnnkit
from rnnkit.nn.reference import Params
from rnnkit.nn.reference import gru as reference_gru

T, B, D, H = 5, 2, 3, 4
rng = np.random.default_rng(1)
p = {
    "w_ih": rng.standard_normal((3 * H, D)) * 0.6,  # [3H, D]
    "w_hh": rng.standard_normal((3 * H, H)) * 0.6,  # [3H, H]
    "b_ih": rng.standard_normal(3 * H) * 0.3,  # [3H]
    "b_hh": rng.standard_normal(3 * H) * 0.3,  # [3H]
}
x = rng.standard_normal((T, B, D))  # [T, B, D]
h0 = rng.standard_normal((B, H)) * 0.5  # [B, H]
# The loss: a fixed random projection of every output and of the final state, so that
# dL/dys and dL/dh_T are arbitrary (not a special case the backward might get right by luck).
dys = rng.standard_normal((T, B, H))
dh_T = rng.standard_normal((B, H))


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# %% [markdown]
# ## Forward, keeping what the backward needs
#
# $$r = \sigma(W_r x + b_{ir} + U_r h + b_{hr}),\quad z = \sigma(W_z x + b_{iz} + U_z h + b_{hz})$$
# $$n = \tanh(W_n x + b_{in} + U_n (r \odot h) + b_{hn}),\quad h' = (1 - z) \odot n + z \odot h$$


# %%
def forward(x, h0, p):
    h, ys, saved = h0, [], []
    for x_t in x:
        gx = x_t @ p["w_ih"].T + p["b_ih"]  # [B, D] @ [D, 3H]
        rz = sigmoid(gx[:, : 2 * H] + h @ p["w_hh"][: 2 * H].T + p["b_hh"][: 2 * H])  # [B, 2H]
        r, z = rz[:, :H], rz[:, H:]
        n = np.tanh(gx[:, 2 * H :] + (r * h) @ p["w_hh"][2 * H :].T + p["b_hh"][2 * H :])
        saved.append((x_t, h, r, z, n))
        h = (1 - z) * n + z * h
        ys.append(h)
    return np.stack(ys), h, saved


def loss(x, h0, p):
    ys, h_T, _ = forward(x, h0, p)
    return float((ys * dys).sum() + (h_T * dh_T).sum())


# %% [markdown]
# ## The backward of one step, and the loop over time
#
# With $\delta = \partial L / \partial h'$ (from the output at t and from step t+1):
#
# - $\partial n = \delta (1 - z)$, $\partial z = \delta (h - n)$, and the direct path $\partial h \mathrel{+}= \delta z$;
# - $a_n = \partial n (1 - n^2)$ (n's pre-activation); $s = U_n^\top a_n$ is the gradient of $r \odot h$;
# - $\partial r = s \odot h$, and **$h$ also receives $s \odot r$**: h reaches n through the reset gate's product $r \odot h$ and $U_n$;
# - $a_r = \partial r\, r (1 - r)$, $a_z = \partial z\, z (1 - z)$; $h$ receives $U_{rz}^\top [a_r, a_z]$.
#
# `drop_reset_path=True` forgets the bold term: the classic slip (h appears in three
# places in the step, and it is easy to differentiate only two of them).


# %%
def backward(x, h0, p, dys, dh_T, drop_reset_path=False):
    _, _, saved = forward(x, h0, p)
    g = {k: np.zeros_like(v) for k, v in p.items()}
    dx = np.zeros_like(x)
    dh = dh_T.copy()
    for t in reversed(range(len(x))):
        x_t, h, r, z, n = saved[t]
        dh = dh + dys[t]
        dn, dz = dh * (1 - z), dh * (h - n)
        dh_prev = dh * z  # the direct path
        a_n = dn * (1 - n**2)  # [B, H]
        s = a_n @ p["w_hh"][2 * H :]  # [B, H] @ [H, H]: d(r * h)
        dr = s * h
        if not drop_reset_path:
            dh_prev = dh_prev + s * r
        a_rz = np.concatenate([dr * r * (1 - r), dz * z * (1 - z)], axis=1)  # [B, 2H]
        dh_prev = dh_prev + a_rz @ p["w_hh"][: 2 * H]  # [B, 2H] @ [2H, H]
        a = np.concatenate([a_rz, a_n], axis=1)  # [B, 3H]
        g["w_ih"] += a.T @ x_t  # [3H, B] @ [B, D]
        g["b_ih"] += a.sum(0)
        g["w_hh"][: 2 * H] += a_rz.T @ h
        g["w_hh"][2 * H :] += a_n.T @ (r * h)
        g["b_hh"] += a.sum(0)
        dx[t] = a @ p["w_ih"]  # [B, 3H] @ [3H, D]
        dh = dh_prev
    return g | {"x": dx, "h0": dh}


grads = backward(x, h0, p, dys, dh_T)
{k: v.shape for k, v in grads.items()}

# %% [markdown]
# ## Against rnnkit's reference and torch's autograd
#
# `rnnkit.nn.reference.gru` takes the same arrays (`Params`, torch.nn's layout) and
# returns every gradient; `reset_after=False` selects this form.

# %%
ys_ref, (h_T_ref,), cache = reference_gru.forward(x, (h0,), Params(**p), reset_after=False)
ref = reference_gru.backward(cache, dys, (dh_T,))
np.testing.assert_allclose(ys_ref, forward(x, h0, p)[0], rtol=1e-12)
for name in p:
    np.testing.assert_allclose(grads[name], getattr(ref, name), rtol=1e-10, atol=1e-12)
np.testing.assert_allclose(grads["x"], ref.x, rtol=1e-10, atol=1e-12)
np.testing.assert_allclose(grads["h0"], ref.state0[0], rtol=1e-10, atol=1e-12)

gru = rnnkit.GRU(D, H, reset_after=False, dtype=torch.float64)
with torch.no_grad():
    for name, value in p.items():
        torch_name = {
            "w_ih": "weight_ih",
            "w_hh": "weight_hh",
            "b_ih": "bias_ih",
            "b_hh": "bias_hh",
        }[name]
        getattr(gru, f"{torch_name}_l0").copy_(torch.from_numpy(value))
xt = torch.from_numpy(x).requires_grad_()
h0t = torch.from_numpy(h0)[None].requires_grad_()
out, h_n = gru(xt, h0t)
(out * torch.from_numpy(dys)).sum().add((h_n[0] * torch.from_numpy(dh_T)).sum()).backward()
np.testing.assert_allclose(gru.weight_hh_l0.grad.numpy(), grads["w_hh"], rtol=1e-10, atol=1e-12)
np.testing.assert_allclose(xt.grad.numpy(), grads["x"], rtol=1e-10, atol=1e-12)
np.testing.assert_allclose(h0t.grad[0].numpy(), grads["h0"], rtol=1e-10, atol=1e-12)
print("hand-written BPTT == rnnkit.nn.reference.gru.backward == autograd through rnnkit.GRU")

# %% [markdown]
# ## The finite-difference check
#
# For every entry $\theta_i$ of every input, the central difference
# $(L(\theta + \epsilon e_i) - L(\theta - \epsilon e_i)) / 2\epsilon$ approximates
# $\partial L / \partial \theta_i$ with an error of order $\epsilon^2$. In float64 with
# $\epsilon = 10^{-6}$, a correct backward agrees to about 1e-8 relative; a wrong one is
# off by order 1.


# %%
def numeric_gradients(x, h0, p, eps=1e-6):
    inputs = {"x": x, "h0": h0} | p
    out = {}
    for name, value in inputs.items():
        g = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            saved = value[i]
            value[i] = saved + eps
            plus = loss(inputs["x"], inputs["h0"], {k: inputs[k] for k in p})
            value[i] = saved - eps
            minus = loss(inputs["x"], inputs["h0"], {k: inputs[k] for k in p})
            value[i] = saved
            g[i] = (plus - minus) / (2 * eps)
        out[name] = g
    return out


def relative_errors(analytic, numeric):
    return {
        name: float(np.abs(analytic[name] - numeric[name]).max() / np.abs(numeric[name]).max())
        for name in numeric
    }


numeric = numeric_gradients(x, h0, p)
errors = relative_errors(grads, numeric)
print({k: f"{v:.1e}" for k, v in errors.items()})
assert max(errors.values()) < 1e-7, errors

# %% [markdown]
# ## The deliberate slip, caught
#
# Dropping h's path through $r \odot h$ and $U_n$ leaves the parameters' gradients of
# the **last** step right (they do not depend on $\partial L/\partial h_{t-1}$), so a
# check on a single step with a zero initial state would miss it. Over several steps
# the missing term flows into every earlier step, and the check flags every input.

# %%
wrong = backward(x, h0, p, dys, dh_T, drop_reset_path=True)
wrong_errors = relative_errors(wrong, numeric)
print({k: f"{v:.1e}" for k, v in wrong_errors.items()})
assert wrong_errors["h0"] > 1e-2 and wrong_errors["w_hh"] > 1e-3, wrong_errors
caught = sorted(name for name, e in wrong_errors.items() if e > 1e-5)
print("the check catches the slip in:", caught)

# one step: the weights' gradients are still right; only h0's shows the slip
one = backward(x[:1], h0, p, dys[:1], dh_T, drop_reset_path=True)
right = backward(x[:1], h0, p, dys[:1], dh_T)
np.testing.assert_allclose(one["w_hh"], right["w_hh"], rtol=1e-12)
assert np.abs(one["h0"] - right["h0"]).max() > 1e-3

# %% [markdown]
# rnnkit's own tests run this check on every cell of the reference (`tests/test_reference.py`),
# and check the fused kernels and the composite path against the reference; so a slip of
# this kind in any implementation fails the suite rather than quietly slowing training.
