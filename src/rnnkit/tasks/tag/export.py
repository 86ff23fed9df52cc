"""The tagger's export adapter: ``Tagger.emissions`` as one graph, and the CRF's scores
for a Viterbi decoder outside.

    words [B, T] int64, chars [B, T, W] int64 (when the tagger reads characters; 0 pads),
    lengths [B] int64 (each >= 1)
        -> emissions [B, T, K]; with a CRF output layer also transitions [K, K] (from,
           to), start [K] and end [K]: the learned scores with the tag scheme's
           forbidden moves at -1e4, exactly what ``CRF.decode`` adds up

The character BiRNN runs over every word slot of the batch (B*T words, each its count of
non-zero character ids long); an empty slot (a padding word) gets a zero feature, as in
the model. Its length is raised to 1 for the recurrent operator, whose behaviour at
length 0 ONNX leaves undefined, and its feature then set to zero. Dropout is off. Tag
names are in the model's metadata (``rnnkit.tags``, JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from rnnkit.export.onnx import ExportError, Graph, embedding, linear, recurrent
from rnnkit.tasks.tag.model import Tagger


class TaggerExport(nn.Module):
    """``Tagger.emissions`` and the CRF's scores for ``to_onnx`` (module docstring)."""

    def __init__(self, model: Tagger, metadata: dict[str, str] | None = None) -> None:
        super().__init__()
        if not isinstance(model, Tagger):
            raise ExportError(f"TaggerExport needs a Tagger, got {type(model).__name__}")
        self.model = model
        self.metadata = dict(metadata or {})

    @property
    def uses_chars(self) -> bool:
        return bool(self.model.config.char_embedding_size)

    def forward(self, words: Tensor, chars: Tensor | None, lengths: Tensor) -> tuple[Tensor, ...]:
        """-> (emissions [B, T, K], and with a CRF: transitions, start, end)."""
        emissions = self.model.emissions(words, chars, lengths)
        crf = self.model.crf
        return (emissions,) if crf is None else (emissions, *crf._scores())

    def onnx_graph(self, example: Any = None) -> Graph:
        if example is not None:
            raise ExportError("the tagger's graph takes no example (pass None)")
        m, c = self.model, self.model.config
        K = m.emit.out_features
        g = Graph("rnnkit_tagger")
        words = g.input("words", "int64", ["B", "T"])
        chars = g.input("chars", "int64", ["B", "T", "W"]) if self.uses_chars else None
        lengths = g.input("lengths", "int64", ["B"])
        int32 = g.onnx.TensorProto.INT32
        features = embedding(g, words, m.embedding)  # [B, T, D]
        if chars is not None:
            features = g.op("Concat", features, self._char_features(g, chars), axis=2)
        lens = g.op("Cast", lengths, to=int32, hint="sequence_lens")
        states, _ = recurrent(g, features, m.rnn, lengths=lens)  # [B, T, 2H]
        g.output(linear(g, states, m.emit, rank=3), "emissions", "float", ["B", "T", K])
        if m.crf is not None:
            shapes = ([K, K], [K], [K])
            for name, value, shape in zip(
                ("transitions", "start", "end"), m.crf._scores(), shapes, strict=True
            ):
                g.output(g.weight(value, f"crf_{name}"), name, "float", shape)
        g.metadata |= {"rnnkit.task": "tag", "rnnkit.cell": c.cell, "rnnkit.output": c.output}
        g.metadata |= self.metadata
        return g

    def _char_features(self, g: Graph, chars: str) -> str:
        """chars [B, T, W] -> [B, T, 2 * Hc]: the final states of the character BiRNN."""
        m = self.model
        flat = g.op("Flatten", chars, axis=2, hint="words_chars")  # [B*T, W]
        real = g.op("Not", g.op("Equal", flat, g.ints(0, "zero")))  # [B*T, W]
        counts = g.op(
            "ReduceSum",
            g.op("Cast", real, to=g.onnx.TensorProto.INT64),
            g.ints([1], "axes"),
            keepdims=0,
        )
        lens = g.op("Max", counts, g.ints(1, "one"))  # [B*T], at least 1 (module docstring)
        lens = g.op("Cast", lens, to=g.onnx.TensorProto.INT32, hint="char_lens")
        embedded = embedding(g, flat, m.char_embedding)  # [B*T, W, Ec]
        _, (h_n, *_) = recurrent(
            g, embedded, m.char_rnn, lengths=lens, hint="char_rnn"
        )  # [2, B*T, Hc]
        both = g.op("Reshape", g.op("Transpose", h_n, perm=[1, 0, 2]), g.ints([0, -1], "shape"))
        empty = g.op("Unsqueeze", g.op("Equal", counts, g.ints(0, "zero")), g.ints([1], "axes"))
        zero = g.array(np.asarray(0.0, dtype=np.float32), "zero")
        feature = g.op("Where", empty, zero, both)  # [B*T, 2Hc]
        shape = g.op("Concat", g.op("Shape", chars, start=0, end=2), g.ints([-1], "shape"), axis=0)
        return g.op("Reshape", feature, shape, hint="char_features")  # [B, T, 2Hc]


def adapter(model: nn.Module) -> TaggerExport:
    if not isinstance(model, Tagger):
        raise ExportError(f"expected a Tagger, got {type(model).__name__}")
    return TaggerExport(model)


def from_run(path: str | Path) -> TaggerExport:
    """The tagger of a trained run's ``best`` checkpoint (or a checkpoint folder), with
    its tag names, vocabularies and word-lookup settings in the model's metadata."""
    from rnnkit.tasks.tag import api

    model, vocab = api.load(path)
    meta = {
        "rnnkit.tags": json.dumps(list(vocab.tags)),
        "rnnkit.scheme": vocab.data.train_scheme,
        "rnnkit.words": json.dumps(vocab.words.to_dict()),
        "rnnkit.chars": json.dumps(vocab.chars.to_dict()),
        "rnnkit.word_lookup": json.dumps(
            {"lowercase": vocab.data.lowercase, "zero_digits": vocab.data.zero_digits}
        ),
        "rnnkit.max_word_length": str(vocab.data.max_word_length),
    }
    return TaggerExport(model.eval(), meta)


def viterbi(
    emissions: np.ndarray, transitions: np.ndarray, start: np.ndarray, end: np.ndarray, length: int
) -> list[int]:
    """The best tag ids of one sentence from the exported outputs (emissions [T, K] of the
    sentence), as ``CRF.decode`` finds them: NumPy only, a reference for decoders
    written elsewhere."""
    best = start + emissions[0]  # [K]
    pointers = []
    for t in range(1, length):
        scores = best[:, None] + transitions  # [K from, K to]
        pointers.append(scores.argmax(0))
        best = scores.max(0) + emissions[t]
    path = [int((best + end).argmax())]
    for back in reversed(pointers):
        path.append(int(back[path[-1]]))
    return path[::-1]
