"""The classifier's export adapter: the whole ``Classifier.forward`` as one graph.

    ids [B, T] int64 (batch-first, padded with 0), lengths [B] int64 (each >= 1)
        -> logits [B, C]

The embedding, the recurrent stack with ``lengths`` as ONNX's sequence_lens, the pooling
over each sequence's own length (final states, mean, max or additive attention, padding
masked as the model masks it) and the output layer. Dropout is off, as in prediction.
The label names are in the model's metadata (``rnnkit.labels``, JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from rnnkit.export.onnx import ExportError, Graph, embedding, linear, recurrent
from rnnkit.tasks.classify.model import Classifier


def _mask(g: Graph, ids: str, lengths: str) -> str:
    """[B, T] bool, True at the steps within each sequence (``length_mask``)."""
    T = g.op("Squeeze", g.op("Shape", ids, start=1, end=2), g.ints([0], "axes"), hint="T")
    steps = g.op("Range", g.ints(0, "zero"), T, g.ints(1, "one"), hint="steps")  # [T]
    return g.op(
        "Less",
        g.op("Unsqueeze", steps, g.ints([0], "axes")),  # [1, T]
        g.op("Unsqueeze", lengths, g.ints([1], "axes")),  # [B, 1]
        hint="mask",
    )


class ClassifierExport(nn.Module):
    """``Classifier.forward`` for ``to_onnx`` (module docstring)."""

    def __init__(self, model: Classifier, metadata: dict[str, str] | None = None) -> None:
        super().__init__()
        if not isinstance(model, Classifier):
            raise ExportError(f"ClassifierExport needs a Classifier, got {type(model).__name__}")
        self.model = model
        self.metadata = dict(metadata or {})

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.model(ids, lengths)

    def onnx_graph(self, example: Any = None) -> Graph:
        if example is not None:
            raise ExportError("the classifier's graph takes no example (pass None)")
        m, c = self.model, self.model.config
        dirs = 2 if c.bidirectional else 1
        C = m.output.out_features
        g = Graph("rnnkit_classifier")
        ids = g.input("ids", "int64", ["B", "T"])
        lengths = g.input("lengths", "int64", ["B"])
        lens = g.op("Cast", lengths, to=g.onnx.TensorProto.INT32, hint="sequence_lens")
        states, finals = recurrent(g, embedding(g, ids, m.embedding), m.rnn, lengths=lens)
        # states [B, T, W], zero past each length
        if c.pooling == "final":
            h_n = finals[0]  # [L*dirs, B, H]: the last layer's directions are the last rows
            rows = c.num_layers * dirs
            last = g.op("Slice", h_n, g.ints([rows - dirs]), g.ints([rows]), g.ints([0]))
            last = g.op("Transpose", last, perm=[1, 0, 2])  # [B, dirs, H]
            pooled = g.op("Reshape", last, g.ints([0, -1], "shape"), hint="pooled")  # [B, W]
        elif c.pooling == "mean":
            total = g.op("ReduceSum", states, g.ints([1], "axes"), keepdims=0)  # [B, W]
            count = g.op("Cast", g.op("Unsqueeze", lengths, g.ints([1], "axes")), to=1)
            pooled = g.op("Div", total, count, hint="pooled")
        else:
            mask = _mask(g, ids, lengths)  # [B, T]
            minus_inf = g.array(np.asarray(-np.inf, dtype=np.float32), "minus_inf")
            if c.pooling == "max":
                keep = g.op("Unsqueeze", mask, g.ints([2], "axes"))  # [B, T, 1]
                masked = g.op("Where", keep, states, minus_inf)
                pooled = g.op("ReduceMax", masked, axes=[1], keepdims=0, hint="pooled")
            else:  # additive self-attention: softmax_t(v . tanh(W h_t + b) + c) over the mask
                first, score = m.attention[0], m.attention[2]
                assert isinstance(first, nn.Linear) and isinstance(score, nn.Linear)
                hidden = g.op("Tanh", linear(g, states, first, rank=3))
                scores = g.op("Squeeze", linear(g, hidden, score, rank=3), g.ints([2], "axes"))
                scores = g.op("Where", mask, scores, minus_inf)  # [B, T]
                weights = g.op("Softmax", scores, axis=1, hint="attention")
                weights = g.op("Unsqueeze", weights, g.ints([2], "axes"))  # [B, T, 1]
                weighted = g.op("Mul", weights, states)
                pooled = g.op("ReduceSum", weighted, g.ints([1], "axes"), keepdims=0)
        g.output(linear(g, pooled, m.output, rank=2), "logits", "float", ["B", C])
        g.metadata |= {
            "rnnkit.task": "classify",
            "rnnkit.cell": c.cell,
            "rnnkit.pooling": c.pooling,
        } | self.metadata
        return g


def adapter(model: nn.Module) -> ClassifierExport:
    if not isinstance(model, Classifier):
        raise ExportError(f"expected a Classifier, got {type(model).__name__}")
    return ClassifierExport(model)


def from_run(path: str | Path) -> ClassifierExport:
    """The classifier of a trained run's ``best`` checkpoint (or a checkpoint folder),
    with its label names and tokenizer in the model's metadata."""
    from rnnkit.tasks.classify import api

    model, tokenizer, labels = api.load(path)
    meta = {
        "rnnkit.labels": json.dumps(list(labels.names)),
        "rnnkit.tokenizer": json.dumps(tokenizer.to_dict()),
        "rnnkit.lowercase": json.dumps(bool(getattr(model, "lowercase", False))),
    }
    return ClassifierExport(model.eval(), meta)
