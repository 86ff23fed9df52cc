"""The diagnostics of one task model on one batch, as numbers and PNGs: what
``rnnkit diagnose`` and ``scripts/vanishing_gradients.py`` write.

Kept apart from the model-agnostic functions in this package: it knows the task models
of ``rnnkit.experiment`` (a layer stack and a head) and the tasks' label functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from rnnkit.diagnostics.gates import GATE_NAMES, gate_trace
from rnnkit.diagnostics.gradflow import gradient_flow, jacobian_norms
from rnnkit.diagnostics.plots import plot_curves, plot_gate_distributions, plot_unit_heatmap
from rnnkit.diagnostics.unroll import unroll
from rnnkit.experiment import SequenceModel
from rnnkit.tasks import Batch, Task


def diagnose_model(
    model: SequenceModel,
    task: Task,
    batch: Batch,
    out: str | Path,
    *,
    units: Sequence[int] = tuple(range(8)),
    jacobian: bool = True,
    title: str = "",
) -> dict:
    """Write gradient_flow.png, jacobian.png, gates.png (gated cells) and heatmap.png
    (units of layer 0 over the batch's first sequence) under ``out``; -> the numbers.

    ``batch`` must be full (every sequence the same length: ``Task.sample_full``).
    """
    if batch.lengths is not None:
        raise ValueError("diagnostics need a full batch (lengths=None); use task.sample_full")
    out = Path(out)
    rnn = model.rnn
    flow = gradient_flow(rnn, batch.x, model.loss_fn(task, batch))
    numbers: dict = {"loss": flow.loss, "gradient_norms": {}, "first_over_last": {}}
    curves = {}
    for l in range(rnn.num_layers):
        for d in range(rnn.num_directions):
            key = f"layer {l}" + (" reverse" if d else "")
            curves[key] = flow.norms[l, d]
            numbers["gradient_norms"][key] = flow.norms[l, d].tolist()
            numbers["first_over_last"][key] = flow.ratio(l, d)
    plot_curves(curves, out / "gradient_flow.png", title=title or "gradient flow",
                ylabel="mean ||dL/dh_t||")  # fmt: skip
    if jacobian:
        jac = jacobian_norms(rnn, batch.x)
        numbers["jacobian_norms"] = jac.tolist()
        plot_curves({"layer 0": jac}, out / "jacobian.png", title=title or "Jacobian products",
                    ylabel="mean ||dh_T/dh_t||_2")  # fmt: skip
    units = [u for u in units if u < rnn.hidden_size]
    labels = task.labels(batch, 0)
    if rnn.cell.name in GATE_NAMES:
        trace = gate_trace(rnn, batch.x)
        numbers["saturated"] = trace.saturated()
        plot_gate_distributions(trace, out / "gates.png", title=title)
    with torch.no_grad():
        hidden = torch.stack(unroll(rnn, batch.x).hidden(0))[:, 0].numpy()  # [T, H], sequence 0
    plot_unit_heatmap(hidden, labels, units, out / "heatmap.png",
                      title=(title + ": " if title else "") + "h_t of chosen units")  # fmt: skip
    return numbers
