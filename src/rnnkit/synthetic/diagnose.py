"""The diagnostics of a synthetic-problem model on one batch, as numbers and PNGs: what
``rnnkit diagnose`` (without ``--lm``) and ``scripts/vanishing_gradients.py`` write."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rnnkit.diagnostics.plots import plot_unit_heatmap
from rnnkit.diagnostics.report import flow_report, gates_report, hidden_states, jacobian_report
from rnnkit.synthetic.base import Batch, Problem
from rnnkit.synthetic.model import SequenceModel


def diagnose_model(
    model: SequenceModel,
    problem: Problem,
    batch: Batch,
    out: str | Path,
    *,
    units: Sequence[int] = tuple(range(8)),
    jacobian: bool = True,
    title: str = "",
) -> dict:
    """Write gradient_flow.png (L: the problem's loss on ``batch``), jacobian.png,
    gates.png (gated cells, layer 0) and heatmap.png (units of layer 0 over the batch's
    first sequence) under ``out``; -> the numbers.

    ``batch`` must be full (every sequence the same length: ``Problem.sample_full``).
    """
    if batch.lengths is not None:
        raise ValueError("diagnostics need a full batch (lengths=None); use sample_full")
    out = Path(out)
    rnn = model.rnn
    numbers = flow_report(
        rnn,
        batch.x,
        model.loss_fn(problem, batch),
        out / "gradient_flow.png",
        title=title or "gradient flow",
        ylabel="mean ||dL/dh_t||",
    )
    if jacobian:
        numbers["jacobian_norms"] = jacobian_report(
            rnn,
            batch.x,
            out / "jacobian.png",
            title=title or "Jacobian products",
            ylabel="mean ||dh_T/dh_t||_2",
        )
    if rnn.cell.gate_names:
        saturated = gates_report(rnn, batch.x, out / "gates.png", layers=[0], title=title)
        numbers["saturated"] = saturated[0]
    hidden = hidden_states(rnn, batch.x, 0)[:, 0].numpy()  # [T, H], sequence 0
    plot_unit_heatmap(
        hidden,
        problem.labels(batch, 0),
        [u for u in units if u < rnn.output_size],
        out / "heatmap.png",
        title=(title + ": " if title else "") + "h_t of chosen units",
    )
    return numbers
