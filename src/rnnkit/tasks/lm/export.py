"""The language model's export adapter: a step model, so generation runs outside Python.

    ids [B] int64, h0 [L, B, H] (and c0 for the LSTM) -> logits [B, V], h_n (and c_n)

One call is one token of every sequence in the batch: the embedding (or one-hot) row,
the recurrent stack at T = 1 from the given state, and the output layer (with tied
weights, one stored matrix). Start from zero states, feed the prime a token at a time,
then each chosen token: that is what ``rnnkit sample`` computes (docs/export.md shows the
loop with ONNX Runtime). Dropout is off, as in generation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.export.onnx import ExportError, Graph, embedding, linear, one_hot, recurrent
from rnnkit.tasks.lm.model import LanguageModel


class LMStep(nn.Module):
    """One generation step of a ``LanguageModel`` (module docstring); ``forward`` is the
    exported computation in torch."""

    def __init__(self, model: LanguageModel, metadata: dict[str, str] | None = None) -> None:
        super().__init__()
        if not isinstance(model, LanguageModel):
            raise ExportError(f"LMStep needs a LanguageModel, got {type(model).__name__}")
        self.model = model
        self.metadata = dict(metadata or {})

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("h0", "c0") if self.model.rnn.cell.num_states == 2 else ("h0",)

    def forward(self, ids: Tensor, h0: Tensor, c0: Tensor | None = None) -> tuple[Tensor, ...]:
        """ids [B] -> (logits [B, V], h_n[, c_n]), each state [L, B, H]."""
        state: Any = h0 if c0 is None else (h0, c0)
        logits, state = self.model(ids[None], state)  # [1, B, V]
        states = state if isinstance(state, tuple) else (state,)
        return (logits[0], *states)

    def onnx_graph(self, example: Any = None) -> Graph:
        if example is not None:
            raise ExportError("the language model's step model takes no example (pass None)")
        m = self.model
        L, V = m.config.num_layers, m.vocab_size
        sizes = m.rnn.state_sizes  # h's H (P projected), c's H
        g = Graph("rnnkit_lm_step")
        ids = g.input("ids", "int64", ["B"])
        state = [
            g.input(name, "float", [L, "B", size])
            for name, size in zip(self.state_names, sizes, strict=True)
        ]
        x = g.op("Unsqueeze", ids, g.ints([0], "axes"), hint="ids_t")  # [1, B]
        x = one_hot(g, x, V) if m.embedding is None else embedding(g, x, m.embedding)
        out, finals = recurrent(g, x, m.rnn, state=state)  # [1, B, H]
        h = g.op("Squeeze", out, g.ints([0], "axes"), hint="top")  # [B, H]
        g.output(linear(g, h, m.decoder, rank=2), "logits", "float", ["B", V])
        for value, name, size in zip(finals, ("h_n", "c_n"), sizes, strict=False):
            g.output(value, name, "float", [L, "B", size])
        g.metadata |= {
            "rnnkit.task": "lm",
            "rnnkit.model": "step",
            "rnnkit.cell": m.config.cell,
        } | self.metadata
        return g


def adapter(model: nn.Module) -> LMStep:
    """The exportable form of a language model."""
    if not isinstance(model, LanguageModel):
        raise ExportError(f"expected a LanguageModel, got {type(model).__name__}")
    return LMStep(model)


def from_run(path: str | Path) -> LMStep:
    """The step model of a trained run's ``best`` checkpoint (or a checkpoint folder),
    with the tokenizer (JSON, as the run's tokenizer.json) in the model's metadata."""
    from rnnkit.tasks.lm import api

    model, tokenizer, _ = api.load(path)
    meta = {"rnnkit.tokenizer": json.dumps(tokenizer.to_dict())}
    return LMStep(model.eval(), meta)


@torch.no_grad()
def zero_state(step: LMStep, batch: int) -> tuple[Tensor, ...]:
    """The zero states a generation starts from, one per state input."""
    rnn = step.model.rnn
    return tuple(torch.zeros(rnn.num_layers, batch, size) for size in rnn.state_sizes)
