"""Sequence classification (many-to-one), e.g. sentiment.

    e_t = E[x_t]                            word embedding [V, D] (optionally pretrained)
    h_1..h_L = BiRNN(dropout(e))            any cell, num_layers, one or two directions
    s = pool(h)                             final state, mean, max, or attention
    logits = W dropout(s) + b               [C]

Pooling over each sequence's own length: "final" concatenates the last layer's final
states of both directions (the forward one at the sequence's last token, the reverse one
at its first); "mean" and "max" ignore padding; "attention" is additive self-attention
(Bahdanau et al. 2015; Yang et al. 2016, section 2.2): a_t = softmax_t(v . tanh(W h_t)),
s = sum_t a_t h_t. Shapes: ids [B, T] (batch-first), lengths [B], logits [B, C].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnnkit.common.config import option
from rnnkit.data.padded import length_mask
from rnnkit.nn.factory import CELL_NAMES, recurrent_layer

POOLINGS = ("final", "mean", "max", "attention")


@dataclass
class ClassifierConfig:
    """The classifier's shape (the vocabulary and labels come from the data)."""

    cell: str = option("lstm", "recurrent cell kind", choices=CELL_NAMES)
    num_layers: int = option(1, "stacked recurrent layers", min=1)
    hidden_size: int = option(150, "hidden units per layer and direction", min=1)
    bidirectional: bool = option(True, "read the sentence in both directions")
    embedding_size: int = option(300, "word embedding width", min=1)
    pooling: str = option("max", "how the states become one vector", choices=POOLINGS)
    dropout: float = option(0.5, "dropout on embeddings, between layers and before the output")


class Classifier(nn.Module):
    def __init__(self, config: ClassifierConfig, vocab_size: int, num_labels: int) -> None:
        super().__init__()
        self.config = config
        directions = 2 if config.bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, config.embedding_size, padding_idx=0)
        self.rnn = recurrent_layer(
            config.cell,
            config.embedding_size,
            config.hidden_size,
            config.num_layers,
            bidirectional=config.bidirectional,
            dropout=config.dropout,
            batch_first=True,
        )
        width = directions * config.hidden_size
        if config.pooling == "attention":
            self.attention = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(width, num_labels)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """ids [B, T], lengths [B] (each >= 1) -> logits [B, C]."""
        states, final = self.rnn(self.dropout(self.embedding(ids)), lengths=lengths)  # [B, T, W]
        mask = length_mask(lengths, ids.shape[1])  # [B, T]
        pooling = self.config.pooling
        if pooling == "final":
            h_n = final[0] if isinstance(final, tuple) else final  # [L*dirs, B, H]
            dirs = 2 if self.config.bidirectional else 1
            pooled = torch.cat(list(h_n[-dirs:]), dim=1)  # [B, dirs*H]
        elif pooling == "mean":
            pooled = states.sum(1) / lengths[:, None].to(states.dtype)  # padding is zero
        elif pooling == "max":
            pooled = states.masked_fill(~mask[..., None], float("-inf")).max(1).values
        else:
            scores = self.attention(states)[..., 0].masked_fill(~mask, float("-inf"))  # [B, T]
            weights = torch.softmax(scores, dim=1)
            pooled = (weights[..., None] * states).sum(1)
        return self.output(self.dropout(pooled))
