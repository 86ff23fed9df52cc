"""The diagnostics of a trained language model on one text, as numbers and PNGs: what
``rnnkit diagnose --lm RUN --text TEXT`` writes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.data.tokenizers import Tokenizer
from rnnkit.diagnostics.plots import plot_unit_heatmap
from rnnkit.diagnostics.report import flow_report, gates_report, hidden_states, jacobian_report
from rnnkit.tasks.lm.model import LanguageModel

HEATMAP_TOKENS = 120
"""The heat map shows the text's last this many tokens (one column each)."""


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

    name = title or f"{rnn.num_layers}x{rnn.hidden_size} {rnn.cell.name} language model"
    flow = flow_report(
        rnn,
        x,
        last_prediction_loss,
        out / "gradient_flow.png",
        ylabel="||dL/dh_t||",
        title=f"{name}: gradient of the last prediction",
    )
    numbers: dict = {"tokens": len(ids) - 1, "last_token_loss": flow.pop("loss")} | flow
    if jacobian:
        numbers["jacobian_norms"] = jacobian_report(
            rnn,
            x,
            out / "jacobian.png",
            title=f"{name}: Jacobian products",
            ylabel="||dh_T/dh_t||_2",
        )
    last = rnn.num_layers - 1
    if rnn.cell.gate_names:
        saturated = gates_report(
            rnn,
            x,
            out / "gates.png",
            layers=range(rnn.num_layers),
            title=f"{name}: layer {last} gates",
        )
        numbers["saturated"] = {f"layer {l}": s for l, s in saturated.items()}
    hidden = hidden_states(rnn, x, last)[:, 0]  # [T, H]
    if units is None:
        units = hidden.var(dim=0).argsort(descending=True)[:8].sort().values.tolist()
    labels = [_token_label(tokenizer.decode([i])) for i in ids[:-1]]
    shown = slice(max(0, len(labels) - HEATMAP_TOKENS), len(labels))  # a readable width
    numbers["heatmap_units"] = list(units)
    numbers["heatmap_tokens"] = [shown.start, shown.stop]
    plot_unit_heatmap(
        hidden[shown].double().cpu().numpy(),
        labels[shown],
        units,
        out / "heatmap.png",
        title=f"{name}: h_t of layer {last}, units {list(units)}",
    )
    return numbers
