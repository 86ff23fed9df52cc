"""The parts of a diagnostics report that any model shares: given a layer stack, an input
batch and (for gradient flow) a loss of the layer's output, write one PNG and return its
numbers. The model-specific reports compose them: ``rnnkit.synthetic.diagnose`` (a task
model on a synthetic batch) and ``rnnkit.tasks.lm.diagnose`` (a language model on a text).

x is [T, B, D], every sequence full length (as ``unroll`` needs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from rnnkit.diagnostics.gates import gate_trace
from rnnkit.diagnostics.gradflow import gradient_flow, jacobian_norms
from rnnkit.diagnostics.plots import plot_curves, plot_gate_distributions
from rnnkit.diagnostics.unroll import unroll
from rnnkit.nn.layers import RNNBase

LossFn = Callable[[Tensor, Tensor | tuple[Tensor, ...]], Tensor]
"""loss_fn(output [T, B, H*dirs], h_n) -> a scalar loss."""


def layer_key(layer: int, direction: int) -> str:
    """'layer 0', 'layer 1 reverse': how numbers.json names a layer-direction."""
    return f"layer {layer}" + (" reverse" if direction else "")


def flow_report(
    rnn: RNNBase, x: Tensor, loss_fn: LossFn, path: str | Path, *, title: str, ylabel: str
) -> dict:
    """gradient_flow.png: ||dL/dh_t|| of every layer-direction against t. -> {"loss",
    "gradient_norms": {key: [T]}, "first_over_last": {key: ratio}}."""
    flow = gradient_flow(rnn, x, loss_fn)
    numbers: dict = {"loss": flow.loss, "gradient_norms": {}, "first_over_last": {}}
    curves = {}
    for l in range(rnn.num_layers):
        for d in range(rnn.num_directions):
            key = layer_key(l, d)
            curves[key] = flow.norms[l, d]
            numbers["gradient_norms"][key] = flow.norms[l, d].tolist()
            numbers["first_over_last"][key] = flow.ratio(l, d)
    plot_curves(curves, path, title=title, ylabel=ylabel)
    return numbers


def jacobian_report(
    rnn: RNNBase, x: Tensor, path: str | Path, *, title: str, ylabel: str
) -> list[float]:
    """jacobian.png: ||dh_T/dh_t||_2 of layer 0 against t; -> those norms [T]."""
    jac = jacobian_norms(rnn, x)
    plot_curves({"layer 0": jac}, path, title=title, ylabel=ylabel)
    return jac.tolist()


def gates_report(
    rnn: RNNBase, x: Tensor, path: str | Path, *, layers: Sequence[int], title: str
) -> dict[int, dict[str, float]]:
    """gates.png of the last of ``layers``; -> {layer: {gate: fraction saturated}}.
    The layer's cell must be gated (``Cell.gate_names``)."""
    traces = {l: gate_trace(rnn, x, layer_index=l) for l in layers}
    plot_gate_distributions(traces[layers[-1]], path, title=title)
    return {l: t.saturated() for l, t in traces.items()}


@torch.no_grad()
def hidden_states(rnn: RNNBase, x: Tensor, layer: int) -> Tensor:
    """h_t of layer ``layer`` (forward direction) over x: [T, B, H]."""
    return torch.stack(unroll(rnn, x).hidden(layer))
