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

import torch
from torch import Tensor, nn

from rnnkit.data.padded import length_mask
from rnnkit.nn.embedding_dropout import embedding_dropout
from rnnkit.nn.factory import drops_sequences, recurrent_layer, variant_fields
from rnnkit.tasks.classify.config import ClassifierConfig
from rnnkit.train.pretrained import Adapter, PretrainedMixin


class Classifier(nn.Module, PretrainedMixin):
    """``save_pretrained(dir, tokenizer=..., labels=...)`` / ``Classifier.from_pretrained(dir)``:
    a folder in the Hub layout (``rnnkit.train.pretrained``);
    ``rnnkit.tasks.classify.load(dir)`` gives the tokenizer and labels with the model."""

    @classmethod
    def pretrained_adapter(cls) -> Adapter:
        from rnnkit.tasks.classify.api import PRETRAINED  # the api imports this module

        return PRETRAINED

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
            variants=variant_fields(config),
        )
        width = directions * self.rnn.output_size  # H per direction, or P projected
        if config.pooling == "attention":
            self.attention = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))
        self.dropout = nn.Dropout(config.dropout)
        # on the embedded words; with locked_dropout the stack drops them per sentence
        self.input_dropout = nn.Dropout(config.dropout if drops_sequences(config) else 0.0)
        self.output = nn.Linear(width, num_labels)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """ids [B, T], lengths [B] (each >= 1) -> logits [B, C]."""
        c = self.config
        x = embedding_dropout(self.embedding, ids, c.embedding_dropout, self.training)  # [B, T, E]
        states, final = self.rnn(self.input_dropout(x), lengths=lengths)  # [B, T, W]
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
