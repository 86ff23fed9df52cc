"""Replay a layer stack one time step at a time, keeping every state as a graph node.

rnnkit layers run a whole sequence inside ``run_layer`` (a fused kernel or the runner's
loop), so the per-step states h_t are not tensors a caller can ask a gradient of.
``unroll`` replays the stack with the layer's own parameters, calling
``layer.cell.step`` once per time step and layer-direction exactly as
``rnnkit.nn.runner.run_direction`` does, and keeps each state. Its output equals the
layer's (tested), so dL/dh_t taken here is dL/dh_t of the layer.

Full-length batches only (no ``lengths=``/packed input): masking would make a state's
gradient depend on where each sequence ends, which is not what these plots show.

The regularisers (``rnnkit.nn.noise``) are replayed as the layer applies them: the masks
of one call drawn as the layer draws them (``layer._draw_noise``: in evaluation only
zoneout's expectation; in training the same masks as the layer's call under the same
seed), locked dropout on each layer's input and the output, weight drop on ``w_hh``,
recurrent dropout on the h of the recurrent product, zoneout after each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.nn.cells import State
from rnnkit.nn.layers import RNNBase


@dataclass
class Unrolled:
    """A step-by-step run of a stack. L layers, dirs directions, time-major.

    ``states[l][d][t]`` is the state of layer l, direction d after it has read input
    step t (for the reverse direction that is the state after steps T-1 .. t), each a
    tuple of tensors [B, size] (``layer.state_sizes``), first element h.
    ``initial[l][d]`` is the state before the first step, ``layer_inputs[l]`` the input
    of layer l [T, B, D_l] (for gate replay).
    """

    output: Tensor  # [T, B, dirs*R] top layer, time-major (R = h's size)
    states: list[list[list[State]]]
    initial: list[list[State]]
    layer_inputs: list[Tensor]
    batch_first: bool

    def output_in_layer_layout(self) -> Tensor:
        return self.output.transpose(0, 1) if self.batch_first else self.output

    def final(self) -> Tensor | tuple[Tensor, ...]:
        """h_n (or (h_n, c_n)) stacked [L*dirs, B, size] as the layer returns it."""
        last = [
            dir_states[0] if d == 1 else dir_states[-1]
            for layer in self.states
            for d, dir_states in enumerate(layer)
        ]
        stacked = tuple(torch.stack([s[k] for s in last]) for k in range(len(last[0])))
        return stacked[0] if len(stacked) == 1 else stacked

    def hidden(self, layer: int, direction: int = 0) -> list[Tensor]:
        """h_t for t = 0 .. T-1 (time order), each [B, R]."""
        return [s[0] for s in self.states[layer][direction]]


def check_full_batch(layer: RNNBase, x: object) -> Tensor:
    """A 3-D floating input in the layer's layout, returned time-major [T, B, D]."""
    if not isinstance(layer, RNNBase):
        raise TypeError(f"layer must be an rnnkit RNN/GRU/LSTM, got {type(layer).__name__}")
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        layout = "[B, T, D]" if layer.batch_first else "[T, B, D]"
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"x must be a floating-point batch {layout} with every step full, got {got}"
        )
    x = x.transpose(0, 1) if layer.batch_first else x
    if x.shape[2] != layer.input_size:
        raise ValueError(
            f"x has {x.shape[2]} features but the layer expects input_size={layer.input_size}"
        )
    if x.shape[0] == 0:
        raise ValueError("x has no time steps (T = 0)")
    return x


def unroll(layer: RNNBase, x: Tensor, hx: Tensor | tuple[Tensor, Tensor] | None = None) -> Unrolled:
    """Run ``layer`` on ``x`` step by step through ``layer.cell.step``; same result.

    x: [T, B, D] ([B, T, D] if batch_first); hx as for ``layer(x, hx)``. Dropout between
    layers and the regularisers are applied as the layer does (so train mode with them is
    random, and equals the layer's call under the same seed).
    """
    x = check_full_batch(layer, x)
    T, B = x.shape[0], x.shape[1]
    initial_states = layer._initial_states(hx, B, x, batched=True)
    cell, dirs = layer.cell, layer.num_directions
    drawn = layer._draw_noise(x)
    states: list[list[list[State]]] = []
    initial: list[list[State]] = []
    inputs: list[Tensor] = []
    for l in range(layer.num_layers):
        input_mask = drawn.inputs[l] if drawn is not None else None
        if input_mask is not None:
            x = x * input_mask  # [T, B, D_l] * [B, D_l]: locked dropout
        inputs.append(x)
        layer_states, layer_initial, outs = [], [], []
        for d in range(dirs):
            w_ih, w_hh, b_ih, b_hh, *extra = layer._direction_weights(l, d)
            assert w_ih is not None
            step_noise = None
            if drawn is not None:
                weight_mask = drawn.weight_hh[l][d]
                if weight_mask is not None and w_hh is not None:
                    w_hh = w_hh * weight_mask  # [G, R]: weight drop
                layer_noise = drawn.steps[l]
                step_noise = layer_noise[d] if layer_noise is not None else None
            gx = F.linear(x, w_ih, b_ih)  # [T, B, G]
            state = initial_states[l * dirs + d]
            layer_initial.append(state)
            seq: list[State] = [()] * T
            for t in range(T - 1, -1, -1) if d == 1 else range(T):
                if step_noise is not None and step_noise.recurrent is not None:
                    h_in = state[0] * step_noise.recurrent  # [B, R]
                    new = cell.step(gx[t], state, w_hh, b_hh, *extra, h_in=h_in)
                else:
                    new = cell.step(gx[t], state, w_hh, b_hh, *extra)
                state = new if step_noise is None else step_noise.zoned(t, new, state)
                seq[t] = state
            layer_states.append(seq)
            outs.append(torch.stack([s[0] for s in seq]))  # [T, B, R], R = h's size
        states.append(layer_states)
        initial.append(layer_initial)
        x = torch.cat(outs, dim=2) if dirs > 1 else outs[0]  # [T, B, dirs*R]
        if layer.dropout and layer.training and l < layer.num_layers - 1:
            x = F.dropout(x, layer.dropout, training=True)
    if drawn is not None and drawn.output is not None:
        x = x * drawn.output  # [T, B, dirs*R] * [B, dirs*R]
    return Unrolled(x, states, initial, inputs, layer.batch_first)
