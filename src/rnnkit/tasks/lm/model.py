"""A recurrent language model: p(x_t | x_<t) from a deep unidirectional RNN.

    e_t = E[x_t]              learned embedding [V, D]  (or one_hot(x_t), D = V: the
                              classic char-RNN input, Karpathy 2015)
    h_t = RNN(dropout(e_t), h_{t-1})     num_layers of one cell kind, dropout between layers
    logits_t = W dropout(h_t) + b        projection to the vocabulary [V, H]

The stack's variants and regularisers (``rnnkit.common.variants``: proj_size, recurrent
dropout, weight drop, zoneout, locked dropout) come from the config; with
``locked_dropout`` the stack drops its input, between layers and its output with one
mask per sequence (Gal & Ghahramani 2016), and embedding dropout drops whole words.

Causal by construction: a language model reads left to right only, so the RNN is never
bidirectional. Dropout sits on the non-recurrent connections only (Zaremba et al. 2014,
section 3). Weight tying shares E and W (Press & Wolf 2017; Inan et al. 2017), which
needs D = H (D = P with a projection).

Shapes: ids [T, B] (time-major, as the batches and the layers), logits [T, B, V],
state as the layer's (h [L, B, H], or (h, c) for the LSTM).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.common.config import check
from rnnkit.nn.cells import set_forget_bias
from rnnkit.nn.embedding_dropout import embedding_dropout
from rnnkit.nn.factory import drops_sequences, recurrent_layer, variant_fields
from rnnkit.tasks.lm.config import LMConfig
from rnnkit.tasks.lm.loss import projected_cross_entropy
from rnnkit.train.pretrained import Adapter, PretrainedMixin


class LanguageModel(nn.Module, PretrainedMixin):
    """Embedding (or one-hot) -> rnnkit RNN stack -> dropout -> linear to the vocabulary.

    ``save_pretrained(dir, tokenizer=...)`` / ``LanguageModel.from_pretrained(dir)``: a
    folder in the Hub layout (``rnnkit.train.pretrained``); ``rnnkit.tasks.lm.load(dir)``
    gives the tokenizer and settings with the model."""

    @classmethod
    def pretrained_adapter(cls) -> Adapter:
        from rnnkit.tasks.lm.api import PRETRAINED  # the api imports this module

        return PRETRAINED

    def __init__(self, config: LMConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = check(config, "model")
        if vocab_size < 2:
            raise ValueError(
                f"the vocabulary has {vocab_size} token(s); a language model needs at least 2"
            )
        self.vocab_size = vocab_size
        D = vocab_size if config.input == "onehot" else config.embedding_size
        self.embedding = nn.Embedding(vocab_size, D) if config.input == "embedding" else None
        self.rnn = recurrent_layer(
            config.cell,
            D,
            config.hidden_size,
            config.num_layers,
            dropout=config.dropout,
            unit_forget_bias=config.unit_forget_bias,
            variants=variant_fields(config),
        )
        # with locked_dropout the stack drops its own input and output, per sequence
        self.drop = nn.Dropout(config.dropout if drops_sequences(config) else 0.0)
        self.decoder = nn.Linear(self.rnn.output_size, vocab_size)  # H, or P projected
        self.reset_parameters()
        if config.tie_weights:
            assert self.embedding is not None
            self.decoder.weight = self.embedding.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        c = self.config
        if c.init == "uniform":
            for p in self.parameters():
                nn.init.uniform_(p, -c.init_scale, c.init_scale)
        elif c.init == "orthogonal":
            H = c.hidden_size
            for name, p in self.rnn.named_parameters():
                for block in p.split(H, dim=0):  # one gate's rows at a time
                    if name.startswith(("weight_hh", "weight_hr")):
                        nn.init.orthogonal_(block)
                    elif name.startswith("weight_ih"):
                        nn.init.xavier_uniform_(block)
                    elif name.startswith("bias"):
                        block.zero_()
            if self.embedding is not None:
                nn.init.uniform_(self.embedding.weight, -c.init_scale, c.init_scale)
            nn.init.uniform_(self.decoder.weight, -c.init_scale, c.init_scale)
            self.decoder.bias.zero_()
        self.rnn.reset_constants()  # a layer norm's gains start at 1 whatever the init above
        if getattr(self.rnn, "unit_forget_bias", False):  # the init above overwrote it
            for weights in self.rnn.all_weights:
                set_forget_bias(weights[2], weights[3])

    def forward(self, ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """ids [T, B] int64 -> (logits [T, B, V], final state to carry into the next window)."""
        out, state = self.features(ids, state)
        return self.decoder(out), state  # [T, B, V]

    def features(self, ids: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """ids [T, B] -> (the decoder's input [T, B, H] (P with a projection), dropout
        applied; final state)."""
        if self.embedding is None:
            x = F.one_hot(ids, self.vocab_size).to(self.decoder.weight.dtype)  # [T, B, V]
        else:
            x = embedding_dropout(
                self.embedding, ids, self.config.embedding_dropout, self.training
            )  # [T, B, D]
        out, state = self.rnn(self.drop(x), state)  # [T, B, H]
        return self.drop(out), state

    def loss(
        self, ids: Tensor, targets: Tensor, state: Any = None, reduction: str = "mean"
    ) -> tuple[Tensor, Any]:
        """Cross-entropy in nats of the next tokens targets [T, B] given ids [T, B],
        reduced by "mean" or "sum" over the T * B tokens; and the final state. The same
        as ``F.cross_entropy`` on ``forward``'s logits, through the output layer's faster
        transposed product (``rnnkit.tasks.lm.loss.projected_cross_entropy``)."""
        out, state = self.features(ids, state)
        d = self.decoder
        loss = projected_cross_entropy(
            out.flatten(0, 1), d.weight, d.bias, targets.flatten(), reduction
        )
        return loss, state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def perplexity(loss: float) -> float:
    """exp(mean negative log-likelihood per token in nats); inf past exp's range."""
    return math.exp(loss) if loss < 700 else math.inf


def bits_per_token(loss: float) -> float:
    """Nats per token -> bits per token (bits per character for character models)."""
    return loss / math.log(2)
