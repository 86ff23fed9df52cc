"""The diagnostics of one task model on one batch, as numbers and PNGs: what
``rnnkit diagnose`` and ``scripts/vanishing_gradients.py`` write.

Kept apart from the model-agnostic functions in this package: it knows the task models
of ``rnnkit.synthetic.experiment`` (a layer stack and a head) and the tasks' label functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.data.tokenizers import Tokenizer
from rnnkit.diagnostics.gates import GATE_NAMES, gate_trace
from rnnkit.diagnostics.gradflow import gradient_flow, jacobian_norms
from rnnkit.diagnostics.plots import plot_curves, plot_gate_distributions, plot_unit_heatmap
from rnnkit.diagnostics.unroll import unroll
from rnnkit.synthetic import Batch, Task
from rnnkit.synthetic.experiment import SequenceModel
from rnnkit.tasks.lm.model import LanguageModel


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
    plot_curves(
        curves, out / "gradient_flow.png", title=title or "gradient flow", ylabel="mean ||dL/dh_t||"
    )
    if jacobian:
        jac = jacobian_norms(rnn, batch.x)
        numbers["jacobian_norms"] = jac.tolist()
        plot_curves(
            {"layer 0": jac},
            out / "jacobian.png",
            title=title or "Jacobian products",
            ylabel="mean ||dh_T/dh_t||_2",
        )
    units = [u for u in units if u < rnn.hidden_size]
    labels = task.labels(batch, 0)
    if rnn.cell.name in GATE_NAMES:
        trace = gate_trace(rnn, batch.x)
        numbers["saturated"] = trace.saturated()
        plot_gate_distributions(trace, out / "gates.png", title=title)
    with torch.no_grad():
        hidden = torch.stack(unroll(rnn, batch.x).hidden(0))[:, 0].numpy()  # [T, H], sequence 0
    plot_unit_heatmap(
        hidden,
        labels,
        units,
        out / "heatmap.png",
        title=(title + ": " if title else "") + "h_t of chosen units",
    )
    return numbers


HEATMAP_TOKENS = 120
"""The LM heat map shows the text's last this many tokens (one column each)."""


def _token_label(text: str) -> str:
    """A heat-map column label: whitespace made visible, long tokens cut."""
    shown = text.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣")
    return shown if len(shown) <= 12 else shown[:11] + "…"


def diagnose_lm(
    model: LanguageModel,
    tokenizer: Tokenizer,
    text: str,
    out: str | Path,
    *,
    units: Sequence[int] | None = None,
    jacobian: bool = True,
    title: str = "",
) -> dict:
    """The diagnostics of a trained language model on one text: gradient_flow.png,
    jacobian.png (layer 0), gates.png (gated cells, every layer's gates side by side in
    numbers) and heatmap.png under ``out``; -> the numbers.

    Gradient flow: L is the cross-entropy of the text's last prediction (its final token
    from everything before it), so ||dL/dh_t|| shows how much of that one prediction
    reaches back to step t. units: the heat map's units of the last layer (default: the
    8 whose state varies most over the text).
    """
    ids = tokenizer.encode(text)
    if len(ids) < 2:
        raise ValueError(
            f"the text has {len(ids)} token(s) under this {tokenizer.kind} tokenizer; "
            "diagnostics need at least 2 (an input and a token to predict)"
        )
    out = Path(out)
    model = model.eval()
    rnn = model.rnn
    param = model.decoder.weight
    inputs = torch.tensor(ids[:-1], dtype=torch.int64, device=param.device)[:, None]  # [T, 1]
    with torch.no_grad():
        x = (
            model.embedding(inputs)
            if model.embedding is not None
            else F.one_hot(inputs, model.vocab_size).to(param.dtype)
        )  # [T, 1, D]
    last_target = torch.tensor([ids[-1]], device=param.device)

    def last_prediction_loss(output: Tensor, _final: object) -> Tensor:
        return F.cross_entropy(model.decoder(output[-1]), last_target)

    flow = gradient_flow(rnn, x, last_prediction_loss)
    labels = [_token_label(tokenizer.decode([i])) for i in ids[:-1]]
    numbers: dict = {
        "tokens": len(ids) - 1,
        "last_token_loss": flow.loss,
        "gradient_norms": {},
        "first_over_last": {},
    }
    curves = {}
    for l in range(rnn.num_layers):
        key = f"layer {l}"
        curves[key] = flow.norms[l, 0]
        numbers["gradient_norms"][key] = flow.norms[l, 0].tolist()
        numbers["first_over_last"][key] = flow.ratio(l, 0)
    name = title or f"{rnn.num_layers}x{rnn.hidden_size} {rnn.cell.name} language model"
    plot_curves(
        curves,
        out / "gradient_flow.png",
        ylabel="||dL/dh_t||",
        title=f"{name}: gradient of the last prediction",
    )
    if jacobian:
        jac = jacobian_norms(rnn, x)
        numbers["jacobian_norms"] = jac.tolist()
        plot_curves(
            {"layer 0": jac},
            out / "jacobian.png",
            title=f"{name}: Jacobian products",
            ylabel="||dh_T/dh_t||_2",
        )
    if rnn.cell.name in GATE_NAMES:
        traces = [gate_trace(rnn, x, layer_index=l) for l in range(rnn.num_layers)]
        numbers["saturated"] = {f"layer {l}": t.saturated() for l, t in enumerate(traces)}
        plot_gate_distributions(
            traces[-1], out / "gates.png", title=f"{name}: layer {rnn.num_layers - 1} gates"
        )
    with torch.no_grad():
        hidden = torch.stack(unroll(rnn, x).hidden(rnn.num_layers - 1))[:, 0]  # [T, H]
    if units is None:
        units = hidden.var(dim=0).argsort(descending=True)[:8].sort().values.tolist()
    shown = slice(max(0, len(labels) - HEATMAP_TOKENS), len(labels))  # a readable width
    numbers["heatmap_units"] = list(units)
    numbers["heatmap_tokens"] = [shown.start, shown.stop]
    heading = f"{name}: h_t of layer {rnn.num_layers - 1}, units {list(units)}"
    plot_unit_heatmap(
        hidden[shown].double().cpu().numpy(),
        labels[shown],
        units,
        out / "heatmap.png",
        title=heading,
    )
    return numbers
