"""Sequence to sequence with attention (Cho et al. 2014; Bahdanau et al. 2015; Luong et al.
2015): an encoder reads the source, a decoder writes the target one token at a time while
attending over the encoder's states.

Shapes: B batch, S source steps, T target steps, V target vocabulary, E embedding,
H decoder hidden units, M = dirs * H_enc memory width, A attention width.

Encoder (any cell, ``encoder_layers`` deep, one or two directions; an rnnkit layer called
with ``lengths=``)::

    h_1..h_S = BiRNN(E_src[x])                   memory [B, S, M], zero past each length

Bridge: the decoder layer l starts from the encoder layer min(l, L_enc - 1)'s final
states, both directions concatenated: s_0 = tanh(W_b [h_fwd; h_bwd] + b_b) (Bahdanau et
al. 2015, appendix A.2.2 starts from tanh(W_s h_1 backward)); an LSTM's cell state is
bridged linearly, c_0 = W_c [c_fwd; c_bwd] + b_c.

Attention over the memory, padding masked out (score -inf, so the weights of each row
sum to one over the real source positions and are exactly zero on padding)::

    additive (Bahdanau 2015, eq. 6)     e_j = v . tanh(W_q q + W_k h_j)
    general  (Luong 2015, eq. 8)        e_j = q . (W_a h_j)
    a = softmax_j(e),  c = sum_j a_j h_j                         a [B, S], c [B, M]

Decoder step, one rnnkit single-step cell module per layer (layer 0 shown)::

    bahdanau: c_t = attend(s_{t-1}); s_t = cell([E[y_{t-1}]; c_t], s_{t-1})
              logits = W_o [s_t; c_t; E[y_{t-1}]]           (Bahdanau 2015, A.2.2)
    luong:    s_t = cell([E[y_{t-1}]; ~h_{t-1}], s_{t-1})   (input feeding, Luong 3.3)
              c_t = attend(s_t); ~h_t = tanh(W_c [c_t; s_t]); logits = W_o ~h_t

where s is the top layer's hidden state. Training feeds the gold y_{t-1} (teacher
forcing) or, with probability ``sampling`` per token, the model's own previous argmax
(scheduled sampling, Bengio et al. 2015, with a constant rate).

Regularisers (the config's ``CellVariants``): the encoder's layer and the decoder's cells
both take ``recurrent_dropout``, ``weight_drop`` and ``zoneout``; a training pass draws the
decoder's per-sequence masks once (``draw_noise``) and hands them to every step. With
``locked_dropout`` the decoder's ``dropout`` (on the fed embedding, between its layers and
on the output layer's input) is one mask per target sequence too, as the encoder's is per
source sequence; without it, a fresh mask per step. ``proj_size`` projects the encoder only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.data.padded import length_mask
from rnnkit.data.tokenizers import BOS_ID
from rnnkit.nn.cell_modules import CellBase, CellNoise
from rnnkit.nn.cells import CELLS
from rnnkit.nn.embedding_dropout import embedding_dropout
from rnnkit.nn.factory import cell_module, drops_sequences, recurrent_layer, variant_fields
from rnnkit.nn.noise import dropout_mask
from rnnkit.tasks.seq2seq.config import ATTENTIONS, Seq2SeqConfig
from rnnkit.train.pretrained import Adapter, PretrainedMixin

State = tuple[tuple[Tensor, ...], ...]
"""The decoder state: one tuple per layer, (h,) or (h, c), each [B, H], then (feed,)."""


@dataclass
class Memory:
    """The encoded source, ready to attend over: states [B, S, M], keys (the projected
    states, computed once per source) and mask [B, S] (True on real positions)."""

    states: Tensor
    keys: Tensor
    mask: Tensor

    def repeat(self, k: int) -> Memory:
        """Each row k times in a row (rows b*k .. b*k+k-1 are source b): for beam search."""
        return Memory(*(t.repeat_interleave(k, dim=0) for t in (self.states, self.keys, self.mask)))


@dataclass(frozen=True)
class DecoderNoise:
    """One batch of target sequences' masks (``Seq2Seq.draw_noise``), the same at every
    step: per decoder layer its cell's ``CellNoise`` (None where the cell has none), and
    with ``locked_dropout`` the model's dropout masks, values 0 or 1/(1-p): on the fed
    embedding [B, E], on each layer's input from the layer below [B, H] (None for layer 0),
    and on the output layer's input [B, H + M + E] (bahdanau) or [B, H] (luong)."""

    cells: tuple[CellNoise | None, ...]
    embedded: Tensor | None = None
    between: tuple[Tensor | None, ...] = ()
    output: Tensor | None = None


def index_state(state: State, index: Tensor) -> State:
    """The rows ``index`` [N] of every tensor in a decoder state (beam reordering)."""
    return tuple(tuple(t.index_select(0, index) for t in part) for part in state)


class Attention(nn.Module):
    """Additive (Bahdanau) or general (Luong) attention with source padding masked out."""

    def __init__(self, kind: str, query_size: int, memory_size: int, attention_size: int):
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {kind!r}")
        self.kind = kind
        if kind == "bahdanau":
            self.key = nn.Linear(memory_size, attention_size, bias=False)  # W_k
            self.query = nn.Linear(query_size, attention_size)  # W_q
            self.v = nn.Linear(attention_size, 1, bias=False)
        else:
            self.key = nn.Linear(memory_size, query_size, bias=False)  # W_a

    def forward(self, query: Tensor, memory: Memory) -> tuple[Tensor, Tensor]:
        """query [B, H] -> (context [B, M], weights [B, S])."""
        if self.kind == "bahdanau":
            hidden = torch.tanh(self.query(query)[:, None, :] + memory.keys)  # [B, S, A]
            scores = self.v(hidden)[..., 0]  # [B, S]
        else:
            scores = torch.bmm(memory.keys, query[:, :, None])[..., 0]  # [B, S, H] @ [B, H, 1]
        weights = torch.softmax(scores.masked_fill(~memory.mask, float("-inf")), dim=1)
        context = torch.bmm(weights[:, None, :], memory.states)[:, 0]  # [B, 1, S] @ [B, S, M]
        return context, weights


class Seq2Seq(nn.Module, PretrainedMixin):
    """Encoder-decoder with attention; see the module docstring for the equations.

    ``forward`` is the teacher-forced training pass; ``encode`` + ``start`` + ``step`` are
    the pieces greedy and beam search (``rnnkit.decoding.beam``) drive.
    ``save_pretrained(dir, tokenizers=...)`` / ``Seq2Seq.from_pretrained(dir)``: a folder in
    the Hub layout (``rnnkit.train.pretrained``); ``rnnkit.tasks.seq2seq.load(dir)`` gives
    the ``Translator`` (model, tokenizers, decoding settings).
    """

    @classmethod
    def pretrained_adapter(cls) -> Adapter:
        from rnnkit.tasks.seq2seq.api import PRETRAINED  # the api imports this module

        return PRETRAINED

    def __init__(self, config: Seq2SeqConfig, source_vocab: int, target_vocab: int) -> None:
        super().__init__()
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {config.dropout}")
        if not 0.0 <= config.sampling <= 1.0:
            raise ValueError(f"model.sampling must be in [0, 1], got {config.sampling}")
        c = self.config = config
        dirs = 2 if c.bidirectional else 1
        E, H = c.embedding_size, c.hidden_size
        self.target_vocab = target_vocab
        self.source_embedding = nn.Embedding(source_vocab, E, padding_idx=0)
        self.target_embedding = nn.Embedding(target_vocab, E, padding_idx=0)
        self.encoder = recurrent_layer(
            c.cell,
            E,
            H,
            c.encoder_layers,
            bidirectional=c.bidirectional,
            dropout=c.dropout,
            batch_first=True,
            variants=variant_fields(c),
        )
        M = dirs * self.encoder.output_size  # the memory's width: dirs * (H, or P projected)
        self.num_states = CELLS[c.cell].num_states  # (h,) or (h, c)
        # One bridge per decoder layer and state kind (h, then c for the LSTM), from the
        # encoder's final states of that kind, both directions: [B, dirs * size] -> [B, H].
        sizes = self.encoder.state_sizes
        self.bridge = nn.ModuleList(
            nn.Linear(dirs * sizes[k], H)
            for _ in range(c.decoder_layers)
            for k in range(self.num_states)
        )
        feed = M if c.attention == "bahdanau" else H  # c_t or Luong's ~h_{t-1}
        self.cells = nn.ModuleList(
            cell_module(c.cell, E + feed if layer == 0 else H, H, variants=variant_fields(c))
            for layer in range(c.decoder_layers)
        )
        self.attention = Attention(c.attention, H, M, c.attention_size)
        if c.attention == "bahdanau":
            self.output = nn.Linear(H + M + E, target_vocab)
        else:
            self.combine = nn.Linear(M + H, H, bias=False)  # W_c
            self.output = nn.Linear(H, target_vocab)
        self.dropout = nn.Dropout(c.dropout)
        self.output_width = H + M + E if c.attention == "bahdanau" else H
        # on the source embeddings; with locked_dropout the encoder drops them per sentence
        self.input_dropout = nn.Dropout(c.dropout if drops_sequences(c) else 0.0)

    # --- encoder --------------------------------------------------------------------

    def encode(self, source: Tensor, lengths: Tensor) -> tuple[Memory, State]:
        """source [B, S] ids, lengths [B] (each >= 1) -> (memory, the decoder's first state)."""
        c = self.config
        embedded = embedding_dropout(
            self.source_embedding, source, c.embedding_dropout, self.training
        )  # [B, S, E]
        states, final = self.encoder(self.input_dropout(embedded), lengths=lengths)
        finals = final if isinstance(final, tuple) else (final,)  # each [L_enc*dirs, B, H]
        dirs = 2 if c.bidirectional else 1
        mask = length_mask(lengths, source.shape[1])  # [B, S]
        memory = Memory(states, self.attention.key(states), mask)  # states [B, S, M]
        layers = []
        for layer in range(c.decoder_layers):
            enc = min(layer, c.encoder_layers - 1)
            parts = []
            for k, f in enumerate(finals):
                both = torch.cat(list(f[enc * dirs : (enc + 1) * dirs]), dim=1)  # [B, M]
                bridged = self.bridge[layer * self.num_states + k](both)  # [B, H]
                parts.append(torch.tanh(bridged) if k == 0 else bridged)
            layers.append(tuple(parts))
        B = source.shape[0]
        feed_size = states.shape[2] if c.attention == "bahdanau" else c.hidden_size
        return memory, (*layers, (states.new_zeros(B, feed_size),))

    # --- decoder --------------------------------------------------------------------

    def draw_noise(self, batch_size: int) -> DecoderNoise | None:
        """The masks of one batch of target sequences (training only; None when there are
        none), drawn from torch's default generator in this order: each layer's cell masks
        (``CellBase.draw_noise``), then with ``locked_dropout`` the embedding's, each upper
        layer's input's and the output's, in the parameters' dtype and on their device."""
        c, B, like = self.config, batch_size, self.output.weight
        if not self.training:
            return None
        cells = tuple(cell.draw_noise(B) for cell in self._cells())
        p = c.dropout if c.locked_dropout else 0.0
        if not p and all(n is None for n in cells):
            return None
        embedded = dropout_mask((B, c.embedding_size), p, like)
        between = [dropout_mask((B, c.hidden_size), p, like) for _ in self.cells[1:]]
        output = dropout_mask((B, self.output_width), p, like)
        return DecoderNoise(cells, embedded, (None, *between), output)

    def _cells(self) -> list[CellBase]:
        return [cell for cell in self.cells if isinstance(cell, CellBase)]

    def _dropped(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """The model's dropout on x: the sequence's locked mask where one was drawn, else a
        fresh mask (``nn.Dropout``; the identity in evaluation)."""
        return x * mask if mask is not None else self.dropout(x)

    def step(
        self, previous: Tensor, state: State, memory: Memory, noise: DecoderNoise | None = None
    ) -> tuple[Tensor, State, Tensor]:
        """One decoder step: previous [B] token ids -> (logits [B, V], state, attention [B, S]).
        ``noise``: the sequences' masks from ``draw_noise`` (needed in training when the
        config has per-sequence regularisers; evaluation needs none)."""
        c = self.config
        if noise is None and self.training and self._needs_noise():
            raise ValueError(
                "this decoder's regularisers draw one mask per target sequence: pass "
                "noise=model.draw_noise(batch_size) to every step of the sequence"
            )
        cell_noise = noise.cells if noise is not None else (None,) * len(self.cells)
        between = noise.between if noise is not None else (None,) * len(self.cells)
        embedded = self._dropped(
            embedding_dropout(self.target_embedding, previous, c.embedding_dropout, self.training),
            noise.embedded if noise is not None else None,
        )  # [B, E]
        layers, (feed,) = state[:-1], state[-1]
        top = layers[-1][0]
        if self.config.attention == "bahdanau":
            feed, weights = self.attention(top, memory)  # c_t from s_{t-1}
        x = torch.cat([embedded, feed], dim=1)
        new_layers = []
        for layer, (cell, s) in enumerate(zip(self.cells, layers, strict=True)):
            if layer:
                x = self._dropped(x, between[layer])
            new = cell(x, s if self.num_states == 2 else s[0], noise=cell_noise[layer])
            new = new if isinstance(new, tuple) else (new,)
            new_layers.append(new)
            x = new[0]
        out_mask = noise.output if noise is not None else None
        if self.config.attention == "bahdanau":
            logits = self.output(self._dropped(torch.cat([x, feed, embedded], dim=1), out_mask))
        else:
            context, weights = self.attention(x, memory)  # from s_t
            feed = torch.tanh(self.combine(torch.cat([context, x], dim=1)))  # ~h_t [B, H]
            logits = self.output(self._dropped(feed, out_mask))
        return logits, (*new_layers, (feed,)), weights

    def _needs_noise(self) -> bool:
        """True if a training step needs masks drawn per sequence."""
        c = self.config
        locked = bool(c.locked_dropout and c.dropout)
        return locked or any(cell.recurrent_dropout or cell.weight_drop for cell in self._cells())

    def forward(
        self, source: Tensor, lengths: Tensor, target_in: Tensor, sampling: float | None = None
    ) -> tuple[Tensor, Tensor]:
        """Teacher-forced pass: target_in [B, T] (<bos> y_1 .. y_{T-1}) -> (logits [B, T, V],
        attention [B, T, S]). ``sampling`` (default: the config's, in training mode only)
        is the chance of replacing each fed token by the previous step's argmax."""
        if sampling is None:
            sampling = self.config.sampling if self.training else 0.0
        memory, state = self.encode(source, lengths)
        noise = self.draw_noise(target_in.shape[0])
        logits: list[Tensor] = []
        weights: list[Tensor] = []
        previous = target_in[:, 0]
        for t in range(target_in.shape[1]):
            if t and sampling > 0:
                own = logits[-1].detach().argmax(1)  # [B]
                use_own = torch.rand(own.shape, device=own.device) < sampling
                previous = torch.where(use_own, own, target_in[:, t])
            elif t:
                previous = target_in[:, t]
            out, state, w = self.step(previous, state, memory, noise)
            logits.append(out)
            weights.append(w)
        return torch.stack(logits, 1), torch.stack(weights, 1)

    def loss(
        self, source: Tensor, lengths: Tensor, target: Tensor, target_lengths: Tensor
    ) -> tuple[Tensor, int]:
        """Mean cross-entropy per target token. target [B, T] is y_1 .. y_n <eos> padded
        with 0; the decoder is fed <bos> y_1 .. y_n. -> (loss, tokens counted)."""
        bos = torch.full_like(target[:, :1], BOS_ID)
        logits, _ = self(source, lengths, torch.cat([bos, target[:, :-1]], dim=1))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=0)
        return loss, int(target_lengths.sum())

    def describe(self) -> dict[str, Any]:
        return {"parameters": sum(p.numel() for p in self.parameters())}
