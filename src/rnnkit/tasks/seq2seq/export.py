"""The encoder-decoder's export adapters: the encoder, and the decoder as a step model, so
greedy and beam search run outside Python.

    encoder: source [B, S] int64 (padded with 0), lengths [B] int64 (each >= 1)
        -> memory [B, S, M], keys [B, S, K], and the decoder's first state:
           h_l0 [B, H] (and c_l0 for the LSTM), h_l1, ... per decoder layer, feed [B, F]
    decoder: previous [B] int64 (<bos> first), the state (h_l0, c_l0, ..., feed), memory,
             keys, lengths
        -> logits [B, V], the next state (h_l0_next, ..., feed_next), attention [B, S]

``Seq2Seq.encode`` and ``Seq2Seq.step`` exactly (M = dirs * H the memory width, K the
projected keys' width, F the fed-back vector: Bahdanau's context or Luong's attentional
state); the encoder's state outputs have the decoder's state input names, so they feed
it as they are. The source mask is rebuilt in the decoder from ``lengths``. The
decoder's cells are ONNX recurrent nodes at T = 1. Dropout is off. ``rnnkit export``
writes the two as ``NAME.encoder.onnx`` and ``NAME.decoder.onnx`` for ``--out NAME.onnx``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from rnnkit.data.padded import length_mask
from rnnkit.export.onnx import ExportError, Graph, cell_step, embedding, linear, recurrent
from rnnkit.nn.cell_modules import CellBase
from rnnkit.tasks.seq2seq.model import Memory, Seq2Seq


def state_names(model: Seq2Seq) -> list[str]:
    """The decoder state's names in ``Seq2Seq``'s order: per layer h (and c), then feed."""
    kinds = ("h", "c")[: model.num_states]
    layers = range(model.config.decoder_layers)
    return [f"{k}_l{layer}" for layer in layers for k in kinds] + ["feed"]


def _flat(state: Any) -> list[Tensor]:
    return [t for part in state for t in part]


def _nested(model: Seq2Seq, flat: list[Tensor]) -> tuple[tuple[Tensor, ...], ...]:
    n = model.num_states
    layers = [tuple(flat[i : i + n]) for i in range(0, len(flat) - 1, n)]
    return (*layers, (flat[-1],))


class Seq2SeqEncoder(nn.Module):
    """``Seq2Seq.encode`` for ``to_onnx`` (module docstring)."""

    def __init__(self, model: Seq2Seq, metadata: dict[str, str] | None = None) -> None:
        super().__init__()
        if not isinstance(model, Seq2Seq):
            raise ExportError(f"Seq2SeqEncoder needs a Seq2Seq, got {type(model).__name__}")
        self.model = model
        self.metadata = dict(metadata or {})

    def forward(self, source: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        """-> (memory, keys, then the decoder's first state in ``state_names`` order)."""
        memory, state = self.model.encode(source, lengths)
        return (memory.states, memory.keys, *_flat(state))

    def onnx_graph(self, example: Any = None) -> Graph:
        if example is not None:
            raise ExportError("the encoder's graph takes no example (pass None)")
        m, c = self.model, self.model.config
        dirs = 2 if c.bidirectional else 1
        M, H = dirs * m.encoder.output_size, c.hidden_size
        g = Graph("rnnkit_seq2seq_encoder")
        source = g.input("source", "int64", ["B", "S"])
        lengths = g.input("lengths", "int64", ["B"])
        lens = g.op("Cast", lengths, to=g.onnx.TensorProto.INT32, hint="sequence_lens")
        embedded = embedding(g, source, m.source_embedding)  # [B, S, E]
        states, finals = recurrent(g, embedded, m.encoder, lengths=lens, hint="encoder")
        keys = linear(g, states, m.attention.key, rank=3)  # [B, S, K]
        g.output(states, "memory", "float", ["B", "S", M])
        g.output(keys, "keys", "float", ["B", "S", m.attention.key.out_features])
        names = iter(state_names(m))
        for layer in range(c.decoder_layers):
            enc = min(layer, c.encoder_layers - 1)
            for k, f in enumerate(finals):  # [L_enc*dirs, B, H] -> this layer's [B, M]
                rows = g.op(
                    "Slice", f, g.ints([enc * dirs]), g.ints([(enc + 1) * dirs]), g.ints([0])
                )
                both = g.op("Reshape", g.op("Transpose", rows, perm=[1, 0, 2]), g.ints([0, -1]))
                bridge = m.bridge[layer * m.num_states + k]
                assert isinstance(bridge, nn.Linear)
                bridged = linear(g, both, bridge, rank=2)
                g.output(
                    g.op("Tanh", bridged) if k == 0 else bridged, next(names), "float", ["B", H]
                )
        F = M if c.attention == "bahdanau" else H
        shape = g.op("Concat", g.op("Shape", source, start=0, end=1), g.ints([F]), axis=0)
        zero = g.onnx.numpy_helper.from_array(np.zeros(1, dtype=np.float32))
        g.output(g.op("ConstantOfShape", shape, value=zero), next(names), "float", ["B", F])
        g.metadata |= {"rnnkit.task": "seq2seq", "rnnkit.model": "encoder"} | self.metadata
        return g


class Seq2SeqStep(nn.Module):
    """``Seq2Seq.step`` for ``to_onnx`` (module docstring)."""

    def __init__(self, model: Seq2Seq, metadata: dict[str, str] | None = None) -> None:
        super().__init__()
        if not isinstance(model, Seq2Seq):
            raise ExportError(f"Seq2SeqStep needs a Seq2Seq, got {type(model).__name__}")
        self.model = model
        self.metadata = dict(metadata or {})

    def forward(self, previous: Tensor, *state_memory_keys_lengths: Tensor) -> tuple[Tensor, ...]:
        """(previous, *state, memory, keys, lengths) -> (logits, *next state, attention)."""
        *flat, states, keys, lengths = state_memory_keys_lengths
        memory = Memory(states, keys, length_mask(lengths, states.shape[1]))
        logits, state, weights = self.model.step(previous, _nested(self.model, flat), memory)
        return (logits, *_flat(state), weights)

    def onnx_graph(self, example: Any = None) -> Graph:
        if example is not None:
            raise ExportError("the decoder step's graph takes no example (pass None)")
        m, c = self.model, self.model.config
        dirs = 2 if c.bidirectional else 1
        M, H, V = dirs * m.encoder.output_size, c.hidden_size, m.target_vocab
        F = M if c.attention == "bahdanau" else H
        K = m.attention.key.out_features
        g = Graph("rnnkit_seq2seq_decoder_step")
        previous = g.input("previous", "int64", ["B"])
        names = state_names(m)
        flat = [g.input(n, "float", ["B", F if n == "feed" else H]) for n in names]
        memory = g.input("memory", "float", ["B", "S", M])
        keys = g.input("keys", "float", ["B", "S", K])
        lengths = g.input("lengths", "int64", ["B"])
        mask = _mask(g, memory, lengths)  # [B, S]
        n = m.num_states
        layers = [flat[i : i + n] for i in range(0, len(flat) - 1, n)]
        feed = flat[-1]
        embedded = embedding(g, previous, m.target_embedding)  # [B, E]
        weights = ""
        if c.attention == "bahdanau":
            feed, weights = self._attend(g, layers[-1][0], memory, keys, mask)  # c_t from s_{t-1}
        x = g.op("Concat", embedded, feed, axis=1)
        new_layers = []
        for layer, (cell, s) in enumerate(zip(m.cells, layers, strict=True)):
            assert isinstance(cell, CellBase)
            new = cell_step(g, x, cell, s, hint=f"decoder_l{layer}")
            new_layers.append(new)
            x = new[0]
        if c.attention == "bahdanau":
            top = g.op("Concat", x, feed, embedded, axis=1)
            logits = linear(g, top, m.output, rank=2)
        else:
            context, weights = self._attend(g, x, memory, keys, mask)  # from s_t
            both = g.op("Concat", context, x, axis=1)
            feed = g.op("Tanh", linear(g, both, m.combine, rank=2), hint="attentional")
            logits = linear(g, feed, m.output, rank=2)
        g.output(logits, "logits", "float", ["B", V])
        for name, value in zip(
            names, [t for layer in new_layers for t in layer] + [feed], strict=True
        ):
            g.output(value, f"{name}_next", "float", ["B", F if name == "feed" else H])
        g.output(weights, "attention", "float", ["B", "S"])
        g.metadata |= {"rnnkit.task": "seq2seq", "rnnkit.model": "decoder step"} | self.metadata
        return g

    def _attend(self, g: Graph, query: str, memory: str, keys: str, mask: str) -> tuple[str, str]:
        """``Attention.forward``: query [B, H] -> (context [B, M], weights [B, S])."""
        attention = self.model.attention
        if attention.kind == "bahdanau":
            projected = g.op("Unsqueeze", linear(g, query, attention.query, rank=2), g.ints([1]))
            hidden = g.op("Tanh", g.op("Add", projected, keys))  # [B, S, A]
            scores = g.op("Squeeze", linear(g, hidden, attention.v, rank=3), g.ints([2]))
        else:  # keys [B, S, H] @ query [B, H, 1]
            column = g.op("Unsqueeze", query, g.ints([2]))
            scores = g.op("Squeeze", g.op("MatMul", keys, column), g.ints([2]))
        minus_inf = g.array(np.asarray(-np.inf, dtype=np.float32), "minus_inf")
        weights = g.op("Softmax", g.op("Where", mask, scores, minus_inf), axis=1, hint="weights")
        row = g.op("Unsqueeze", weights, g.ints([1]))  # [B, 1, S] @ memory [B, S, M]
        context = g.op("Squeeze", g.op("MatMul", row, memory), g.ints([1]), hint="context")
        return context, weights


def _mask(g: Graph, memory: str, lengths: str) -> str:
    """[B, S] bool, True on real source positions (``length_mask``)."""
    S = g.op("Squeeze", g.op("Shape", memory, start=1, end=2), g.ints([0]), hint="S")
    steps = g.op("Range", g.ints(0), S, g.ints(1), hint="positions")  # [S]
    row = g.op("Unsqueeze", steps, g.ints([0]))  # [1, S]
    return g.op("Less", row, g.op("Unsqueeze", lengths, g.ints([1])), hint="mask")


def adapter(model: nn.Module) -> nn.Module:
    raise ExportError(
        "a Seq2Seq model exports as two graphs: to_onnx(Seq2SeqEncoder(model), ...) and "
        "to_onnx(Seq2SeqStep(model), ...) from rnnkit.tasks.seq2seq.export"
    )


def from_run(path: str | Path) -> dict[str, nn.Module]:
    """The encoder and the decoder step of a trained run's ``best`` checkpoint (or a
    checkpoint folder), with both tokenizers and the decoding settings in the metadata."""
    import dataclasses

    from rnnkit.tasks.seq2seq import api

    translator = api.load(path)
    meta = {
        "rnnkit.source_tokenizer": json.dumps(translator.tokenizers.source.to_dict()),
        "rnnkit.target_tokenizer": json.dumps(translator.tokenizers.target.to_dict()),
        "rnnkit.decode": json.dumps(dataclasses.asdict(translator.decode)),
    }
    model = translator.model.eval()
    return {"encoder": Seq2SeqEncoder(model, meta), "decoder": Seq2SeqStep(model, meta)}
