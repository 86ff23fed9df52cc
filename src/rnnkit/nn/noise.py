"""The recurrent regularisers' noise: what each draws, its shapes, and how it reaches a
``run_layer`` implementation.

Four regularisers, each a layer argument (``rnnkit.nn.layers.RNNBase``; docs/cells.md):

* ``recurrent_dropout`` p (Gal & Ghahramani 2016, "A theoretically grounded application
  of dropout in recurrent neural networks", sec. 4): one mask m [B, R] per sequence and
  layer-direction, the same at every step, on h where it enters the recurrent product:
  ``W_hh (m * h_{t-1})``. The carried state and the output keep h unmasked.
* ``weight_drop`` p (Merity, Keskar & Socher 2017, "Regularizing and optimizing LSTM
  language models", sec. 2, after Wan et al. 2013's DropConnect): one mask M [G, R] per
  forward call and layer-direction on the recurrent weight: the layer runs with
  ``M * weight_hh``, a new tensor; the parameter is never written, and its gradient is
  M times the dropped weight's.
* ``zoneout`` p (Krueger et al. 2016, "Zoneout: regularizing RNNs by randomly preserving
  hidden activations", sec. 3): per unit and step, a state keeps its previous value with
  probability p: ``s_t = k_t * s_{t-1} + (1 - k_t) * s_new``, k_t ~ Bernoulli(p) drawn
  fresh at every step; one rate per state (the LSTM's h and c may differ). In evaluation
  k_t = p, the expectation of the mask (as the paper does at test time).
* ``variational_dropout`` p (Gal & Ghahramani 2016, sec. 4, "locked" dropout): one mask
  [B, F] per sequence on every layer's input and on the last layer's output, the same at
  every step.

The dropout-like masks hold 0 or 1/(1-p) (inverted dropout: their expectation is 1, so
evaluation uses none); zoneout's keep-masks hold 0 or 1 (k = 1 keeps the previous value),
or in evaluation the constant p. Every mask is drawn with ``torch.bernoulli`` from torch's
default generator of the input's device, in the order ``StackNoise`` documents, and only
in training with p > 0: a seed, or the RNG state a checkpoint restores, replays them.

The kernel interface is ``StepNoise``: ``run_layer(cell, x, lengths, states, weights,
noise=...)`` with one ``StepNoise`` (or None) per direction. Weight drop and locked
dropout need no kernel support: they change the weights handed to ``run_layer`` and its
input and output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rnnkit.common.checks import probability


@dataclass(frozen=True)
class StepNoise:
    """The per-step noise of one layer-direction: what a ``run_layer`` that accepts
    ``noise=`` (``kernels.Kernel.noise``) applies inside its time loop.

    ``recurrent``: [B, R] or None (R = h's size, P with ``proj_size``), values 0 or
    1/(1-p). Every step's recurrent product reads ``h_in = recurrent * h_{t-1}`` (the
    cell step's ``h_in=``; for the reset-before GRU both products, U_rz h_in and
    U_n (r * h_in)); nothing else does. Backward: dL/dh_{t-1} gets ``recurrent *
    (W_hh^T da)`` on that path and the unmasked gradient on every other path, and
    dL/dW_hh = sum_t da_t^T h_in,t.

    ``zoneout``: None, or per state in ``Cell.state_sizes`` order a keep-mask k
    [T, B, size] or None (that state has no zoneout). After the cell's step gives s_new,
    ``s_t = k[t] * s_{t-1} + (1 - k[t]) * s_new`` (exactly s_{t-1} where k = 1, exactly
    s_new where k = 0: ``torch.lerp``); the step itself reads the zoned states
    s_{t-1} (so the LSTM's h_new = o * tanh(c_new) uses the un-zoned c_new, as Krueger
    et al. 2016's zoneout LSTM). k is indexed by the input's time position, also in the reverse
    direction (which reads k[T-1] first). In evaluation k is the constant p expanded to
    [T, B, size] (stride 0). Backward: dL/ds_new = (1 - k) dL/ds_t and dL/ds_{t-1} gets
    k dL/ds_t besides the step's own paths. With ``lengths``, the length mask applies
    after zoneout: past a sequence's end its state is held, as without noise.
    """

    recurrent: Tensor | None = None
    zoneout: tuple[Tensor | None, ...] | None = None

    def zoned(self, t: int, new: tuple[Tensor, ...], old: tuple[Tensor, ...]):
        """The states after step ``t``: each k[t] * old + (1 - k[t]) * new where k is given
        (``torch.lerp`` is exact at k = 0 and 1, so a zoned unit keeps its value)."""
        if self.zoneout is None:
            return new
        return tuple(
            n if k is None else torch.lerp(n, o, k[t])  # [B, size]
            for n, o, k in zip(new, old, self.zoneout, strict=True)
        )


@dataclass(frozen=True)
class StackNoise:
    """Every mask one forward call of a layer stack applies, drawn by ``draw`` in this
    order: per layer l, its input mask, then per direction d its weight mask, its
    recurrent mask and its zoneout masks (state order); last, the output mask.

    ``inputs[l]``: [B, D_l] locked-dropout mask on layer l's input (D_0 = input_size,
    then dirs * R), or None. ``output``: [B, dirs * R] on the last layer's output, or
    None. ``weight_hh[l][d]``: [G, R] DropConnect mask on that weight_hh, or None.
    ``steps[l]``: one ``StepNoise`` per direction, or None where layer l has no per-step
    noise.
    """

    inputs: tuple[Tensor | None, ...]
    output: Tensor | None
    weight_hh: tuple[tuple[Tensor | None, ...], ...]
    steps: tuple[tuple[StepNoise, ...] | None, ...]

    @property
    def per_step(self) -> bool:
        """True if some layer has per-step noise (so it needs a ``run_layer`` that takes
        ``noise=``)."""
        return any(s is not None for s in self.steps)


def dropout_mask(shape: Sequence[int], p: float, like: Tensor) -> Tensor | None:
    """A mask of 0 and 1/(1-p), each entry kept with probability 1 - p, in ``like``'s
    dtype and device (torch's default generator); None for p = 0."""
    if p == 0:
        return None
    keep = torch.full(tuple(shape), 1.0 - p, dtype=like.dtype, device=like.device)
    return torch.bernoulli(keep) / (1.0 - p)


def zoneout_mask(T: int, B: int, size: int, p: float, training: bool, like: Tensor):
    """k [T, B, size]: Bernoulli(p) per step and unit in training, the constant p
    (expanded, stride 0) in evaluation; None for p = 0."""
    if p == 0:
        return None
    if not training:
        return like.new_full((1, 1, 1), p).expand(T, B, size)
    return torch.bernoulli(torch.full((T, B, size), p, dtype=like.dtype, device=like.device))


def draw(
    *,
    training: bool,
    T: int,
    B: int,
    input_sizes: Sequence[int],
    weight_hh_shape: Sequence[int] | None,
    state_sizes: Sequence[int],
    directions: int,
    recurrent_dropout: float,
    weight_drop: float,
    zoneout: Sequence[float],
    variational_dropout: float,
    like: Tensor,
) -> StackNoise | None:
    """The masks of one forward call of a stack of ``len(input_sizes)`` layers, or None
    when none applies (evaluation without zoneout, or every rate 0). ``input_sizes[l]``
    is D_l, ``state_sizes`` the cell's (h first), ``zoneout`` one rate per state;
    ``weight_hh_shape`` [G, R] (None: the cell has no recurrent weight, and no weight
    drop)."""
    p_rec, p_w, p_var = (
        (recurrent_dropout, weight_drop, variational_dropout) if training else (0.0, 0.0, 0.0)
    )
    if not (p_rec or p_w or p_var or any(zoneout)):
        return None
    R = state_sizes[0]
    inputs, weights, steps = [], [], []
    for size in input_sizes:
        inputs.append(dropout_mask((B, size), p_var, like))
        layer_weights, layer_steps = [], []
        for _ in range(directions):
            layer_weights.append(
                None if weight_hh_shape is None else dropout_mask(weight_hh_shape, p_w, like)
            )
            recurrent = dropout_mask((B, R), p_rec, like)
            zones = tuple(
                zoneout_mask(T, B, n, p, training, like)
                for n, p in zip(state_sizes, zoneout, strict=True)
            )
            any_zone = any(z is not None for z in zones)
            layer_steps.append(StepNoise(recurrent, zones if any_zone else None))
        weights.append(tuple(layer_weights))
        active = any(s.recurrent is not None or s.zoneout is not None for s in layer_steps)
        steps.append(tuple(layer_steps) if active else None)
    output = dropout_mask((B, directions * R), p_var, like)
    return StackNoise(tuple(inputs), output, tuple(weights), tuple(steps))


def zoneout_rates(value: object, state_names: Sequence[str]) -> tuple[float, ...]:
    """One zoneout rate per state from a number (every state) or a tuple with one number
    per state ((p_h, p_c) for the LSTM), each in [0, 1)."""
    n = len(state_names)
    rates = tuple(value) if isinstance(value, tuple | list) else (value,) * n
    try:
        if len(rates) != n:
            raise ValueError
        return tuple(probability("zoneout", p) for p in rates)
    except ValueError:
        per_state = f" or a tuple ({', '.join('p_' + s for s in state_names)}) of them"
        raise ValueError(
            f"zoneout must be a number in [0, 1){per_state if n > 1 else ''}, got {value!r}"
        ) from None
