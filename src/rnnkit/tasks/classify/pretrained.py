"""Initialise a task model's embeddings and recurrent layers from a trained word-level
language model: the pretraining of Dai & Le 2015 ("Semi-supervised Sequence Learning"),
where an LSTM first learns to predict the next word of unlabelled text and the
classifier then starts from its weights and trains all of them.

A language model reads left to right, so it can start the forward direction of a
task's recurrent layer; one trained on reversed text (each line's words, and the lines,
in reverse order) can start the backward direction. Words are matched by their text:
a task word the language model never saw keeps its random embedding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rnnkit.data.tokenizers import PAD_ID, Tokenizer
from rnnkit.nn.layers import RNNBase
from rnnkit.tasks.lm import api as lm


@dataclass
class Transfer:
    """What came over: the recurrent layers (by index) whose weights were copied, and
    the words whose embeddings were, out of how many (None: embeddings left alone)."""

    layers: list[int]
    words: int | None
    vocabulary: int

    def describe(self, path: str | Path, direction: str) -> str:
        layers = ", ".join(str(layer) for layer in self.layers)
        text = f"language model {path}: {direction} direction of layer(s) {layers}"
        if self.words is None:
            return text
        return f"{text}; embeddings of {self.words:,} of {self.vocabulary:,} words"


def init_from_language_model(
    embedding: nn.Embedding | None,
    rnn: RNNBase,
    tokenizer: Tokenizer,
    path: str | Path,
    *,
    reverse: bool = False,
) -> Transfer:
    """Copy the language model at ``path`` (a run or checkpoint directory of ``rnnkit
    train lm`` with a word tokenizer) into ``rnn``'s forward direction, or its backward
    one when ``reverse``, and its embedding rows into ``embedding`` (None: leave it).

    Layers are copied from the bottom while their shapes agree: every layer of a
    one-direction stack the language model is deep enough for, only the first of a
    bidirectional one (its upper layers read both directions). The cell, hidden size and
    embedding width must match; a mismatch raises ValueError naming both values.
    """
    model, lm_tokenizer, _ = lm.load(path)
    where = f"language model {str(path)!r}"
    if lm_tokenizer.kind != "word":
        raise ValueError(f"{where} has a {lm_tokenizer.kind} tokenizer; a word one is needed")
    if reverse and not rnn.bidirectional:
        raise ValueError(f"{where} is for the backward direction, but the layer has one direction")
    lm_cell = model.config.cell
    cell = rnn.cell.name
    if lm_cell != cell:
        raise ValueError(f"{where} has cell {lm_cell!r}; the model's is {cell!r}")
    if model.config.hidden_size != rnn.hidden_size:
        raise ValueError(
            f"{where} has hidden size {model.config.hidden_size}; the model's is {rnn.hidden_size}"
        )
    if model.embedding is None:
        raise ValueError(f"{where} has one-hot input; it needs learned embeddings")
    width = model.embedding.weight.shape[1]
    if width != rnn.input_size:
        raise ValueError(
            f"{where} has embeddings of width {width}; the model reads {rnn.input_size}"
        )
    suffix = "_reverse" if reverse else ""
    source = dict(model.rnn.named_parameters())
    target = dict(rnn.named_parameters())
    layers = []
    with torch.no_grad():
        for layer in range(min(model.rnn.num_layers, rnn.num_layers)):
            names = [n for n in source if n.rsplit("_l", 1)[1] == str(layer)]
            if any(source[n].shape != target[n + suffix].shape for n in names):
                break
            for name in names:
                target[name + suffix].copy_(source[name])
            layers.append(layer)
        if embedding is None:
            return Transfer(layers, None, tokenizer.vocab_size)
        lm_ids = {lm_tokenizer.token_text(i): i for i in range(lm_tokenizer.vocab_size)}
        pairs = [
            (i, lm_ids[text])
            for i in range(tokenizer.vocab_size)
            if i != PAD_ID and (text := tokenizer.token_text(i)) in lm_ids
        ]
        if pairs:
            rows, lm_rows = torch.tensor(pairs).T  # [2, N]: task rows, language-model rows
            embedding.weight[rows] = model.embedding.weight[lm_rows]
    return Transfer(layers, len(pairs), tokenizer.vocab_size)
