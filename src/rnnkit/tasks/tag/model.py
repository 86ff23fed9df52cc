"""Sequence tagging (many-to-many, aligned), e.g. named entities: a BiRNN-CRF
(Huang et al. 2015; Lample et al. 2016) with optional character-level word features.

    c_w = [fwd_final; bwd_final] of a character BiRNN over the word's characters
    e_t = [E[w_t]; c_{w_t}]                    word embedding, plus character features
    h_t = BiRNN(dropout(e))_t
    emissions_t = W dropout(h_t) + b           [K] scores per tag
    output: a linear-chain CRF over the emissions (rnnkit.tasks.tag.CRF), or a softmax

No pretrained word vectors can be loaded offline here, so the character features carry
what the word embedding cannot learn for rare and unseen words (Lample et al. 2016,
section 4.1). Shapes: words [B, T], chars [B, T, W] (W characters per word, padded with
0), lengths [B], emissions [B, T, K].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.padded import length_mask
from rnnkit.nn.embedding_dropout import embedding_dropout
from rnnkit.nn.factory import drops_sequences, recurrent_layer, variant_fields
from rnnkit.tasks.tag.config import TaggerConfig
from rnnkit.tasks.tag.crf import CRF
from rnnkit.train.pretrained import Adapter, PretrainedMixin


class Tagger(nn.Module, PretrainedMixin):
    """``save_pretrained(dir, vocabulary=...)`` / ``Tagger.from_pretrained(dir)``: a folder
    in the Hub layout (``rnnkit.train.pretrained``; the CRF's transitions are weights);
    ``rnnkit.tasks.tag.load(dir)`` gives the vocabularies with the model."""

    @classmethod
    def pretrained_adapter(cls) -> Adapter:
        from rnnkit.tasks.tag.api import PRETRAINED  # the api imports this module

        return PRETRAINED

    def __init__(
        self,
        config: TaggerConfig,
        vocab_size: int,
        char_vocab_size: int,
        num_tags: int,
        constraints: tuple | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        width = config.embedding_size
        self.embedding = nn.Embedding(vocab_size, config.embedding_size, padding_idx=0)
        if config.char_embedding_size:
            self.char_embedding = nn.Embedding(
                char_vocab_size, config.char_embedding_size, padding_idx=0
            )
            self.char_rnn = recurrent_layer(
                config.cell,
                config.char_embedding_size,
                config.char_hidden_size,
                bidirectional=True,
                batch_first=True,
            )
            width += 2 * config.char_hidden_size
        self.rnn = recurrent_layer(
            config.cell,
            width,
            config.hidden_size,
            config.num_layers,
            bidirectional=True,
            dropout=config.dropout,
            batch_first=True,
            variants=variant_fields(config),
        )
        # on the word features and the states; with locked_dropout the stack drops them
        self.dropout = nn.Dropout(config.dropout if drops_sequences(config) else 0.0)
        self.emit = nn.Linear(2 * self.rnn.output_size, num_tags)  # H per direction, or P
        self.crf = CRF(num_tags, *(constraints or ())) if config.output == "crf" else None

    def _char_features(self, chars: Tensor) -> Tensor:
        """chars [B, T, W] -> [B, T, 2 * char_hidden]: final states of the char BiRNN."""
        B, T, W = chars.shape
        flat = chars.reshape(B * T, W)  # [B*T, W]
        lengths = (flat != 0).sum(1)
        # Only the real words go through the char BiRNN: in a batch of sentences of mixed
        # lengths, half the B*T slots can be padding words, which keep a zero feature.
        if torch.compiler.is_compiling():  # no branch on values: every slot goes through,
            _, final = self.char_rnn(self.char_embedding(flat), lengths=lengths)
            h_n = final[0] if isinstance(final, tuple) else final  # [2, B*T, Hc]
            return torch.cat([h_n[0], h_n[1]], dim=1).reshape(B, T, -1)  # padding: 0 (h_0)
        real = lengths > 0
        if not bool(real.any()):
            return self.char_embedding.weight.new_zeros(B, T, 2 * self.config.char_hidden_size)
        words = flat[real][:, : int(lengths.max())]  # [R, W'], W' the longest word
        _, final = self.char_rnn(self.char_embedding(words), lengths=lengths[real])
        h_n = final[0] if isinstance(final, tuple) else final  # [2, R, Hc]
        out = h_n.new_zeros(B * T, 2 * h_n.shape[2])
        out[real] = torch.cat([h_n[0], h_n[1]], dim=1)
        return out.reshape(B, T, -1)

    def emissions(self, words: Tensor, chars: Tensor | None, lengths: Tensor) -> Tensor:
        """-> tag scores [B, T, K]."""
        c = self.config
        features = embedding_dropout(self.embedding, words, c.embedding_dropout, self.training)
        if self.config.char_embedding_size:
            if chars is None:
                raise ValueError("this tagger uses character features: pass chars [B, T, W]")
            features = torch.cat([features, self._char_features(chars)], dim=2)
        states, _ = self.rnn(self.dropout(features), lengths=lengths)  # [B, T, 2H] (2P)
        return self.emit(self.dropout(states))

    def loss(self, words: Tensor, chars: Tensor | None, lengths: Tensor, tags: Tensor) -> Tensor:
        """Mean negative log-likelihood per sentence, for either output layer: the softmax's
        token losses are summed over each sentence as the CRF's are (Lample et al. 2016,
        Ma & Hovy 2016), so one learning rate suits both and an ablation compares like
        with like."""
        return self.loss_of(self.emissions(words, chars, lengths), lengths, tags)

    @torch.no_grad()
    def decode(self, words: Tensor, chars: Tensor | None, lengths: Tensor) -> list[list[int]]:
        """The best tag ids of each sentence, unpadded."""
        return self.decode_of(self.emissions(words, chars, lengths), lengths)

    def loss_of(self, scores: Tensor, lengths: Tensor, tags: Tensor) -> Tensor:
        """``loss`` from tag scores [B, T, K] already computed by ``emissions``."""
        mask = length_mask(lengths, scores.shape[1])  # [B, T]
        if self.crf is not None:
            return self.crf.neg_log_likelihood(scores, tags, mask).mean()
        return F.cross_entropy(scores[mask].float(), tags[mask], reduction="sum") / scores.shape[0]

    def decode_of(self, scores: Tensor, lengths: Tensor) -> list[list[int]]:
        """``decode`` from tag scores [B, T, K] already computed by ``emissions``."""
        if self.crf is not None:
            return self.crf.decode(scores, length_mask(lengths, scores.shape[1]))
        best = scores.argmax(2)
        return [best[b, :n].tolist() for b, n in enumerate(lengths.tolist())]
