"""Embedding dropout (Gal & Ghahramani 2016, "A theoretically grounded application of
dropout in recurrent neural networks", sec. 4): drop whole word types, not single
features. One mask m [V, 1] per call (a batch), m_v ~ Bernoulli(1 - p) / (1 - p), on the
rows of the embedding matrix E [V, D], so every occurrence of a dropped word in the batch
reads zeros. Merity et al. 2017 (AWD-LSTM, sec. 4.3) use it with p = 0.1 on PTB.
"""

from __future__ import annotations

from torch import Tensor, nn


def embedding_dropout(embedding: nn.Embedding, ids: Tensor, p: float, training: bool) -> Tensor:
    """ids [...] -> embeddings [..., D] of ``embedding`` with whole rows dropped with
    probability ``p`` when ``training``; the plain lookup otherwise."""
    if not training or p == 0.0:
        return embedding(ids)
    weight = embedding.weight  # [V, D]
    keep = weight.new_empty(weight.shape[0], 1).bernoulli_(1.0 - p) / (1.0 - p)  # [V, 1]
    # (E * keep)[ids] = E[ids] * keep[ids]: the looked-up rows only, not a copy of all V
    return embedding(ids) * keep[ids]  # [..., D] * [..., 1]
