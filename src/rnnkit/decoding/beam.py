"""Greedy and beam-search decoding for encoder-decoder models (``rnnkit.tasks.seq2seq.model``).

Both are batched: B sources decode together (beam search as B * K rows) and each source's
result is what it would get alone. A decoder here is anything with
``step(previous [N], state, memory) -> (logits [N, V], state, attention [N, S])`` whose
state is a tuple of tuples of [N, ...] tensors and whose memory has ``repeat(k)``.

A hypothesis y_1 .. y_n scores log p(y) = sum_t log p(y_t | y_<t, x), <eos> included when
it ended by one (a hypothesis still open at ``max_length`` is returned as it is, with
``finished=False``). <pad> and <bos> are never emitted.

Length normalisation is Wu et al. 2016's (section 7, eq. 14): beams are ranked by
log p(y) / lp(y) with lp(y) = ((5 + |y|) / 6) ** alpha, |y| counting the emitted tokens
(<eos> included); alpha = 0 ranks by log p(y) alone, which favours short outputs, and
alpha = 1 is close to dividing by the length. No coverage penalty.

Stopping is exact for the beam: a source stops once its best finished hypothesis beats
every open beam's best possible final score. Log-probabilities are <= 0, so an open beam
with score s can at most reach s / lp(max_length); its final score only falls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.data.tokenizers import BOS_ID, EOS_ID, PAD_ID

NEVER_EMITTED = (PAD_ID, BOS_ID)


class StepDecoder(Protocol):
    def step(self, previous: Tensor, state: Any, memory: Any) -> tuple[Tensor, Any, Tensor]: ...


@dataclass
class Hypothesis:
    tokens: list[int]
    """The output ids, without <bos> and <eos>."""
    score: float
    """log p(tokens [, <eos>] | source), natural log."""
    normalised: float
    """score / lp: what beam search ranks by."""
    attention: Tensor
    """[steps, S]: one row of attention weights per emitted token (<eos> included)."""
    finished: bool
    """Ended by <eos> (False: cut at max_length)."""


def length_penalty(length: int, alpha: float) -> float:
    """Wu et al. 2016's lp(Y) = ((5 + |Y|) / 6) ** alpha."""
    return ((5.0 + length) / 6.0) ** alpha


def _index(state: Any, index: Tensor) -> Any:
    if isinstance(state, Tensor):
        return state.index_select(0, index)
    return tuple(_index(s, index) for s in state)


def _log_probs(logits: Tensor) -> Tensor:
    """log-softmax [N, V] with the never-emitted tokens at -inf (not renormalised)."""
    logp = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    logp[:, list(NEVER_EMITTED)] = float("-inf")
    return logp


@torch.no_grad()
def greedy(
    model: StepDecoder,
    memory: Any,
    state: Any,
    batch_size: int,
    max_length: int,
    alpha: float = 0.0,
) -> list[Hypothesis]:
    """The argmax token at each step, for ``batch_size`` sources at once."""
    previous = torch.full((batch_size,), BOS_ID, dtype=torch.int64, device=_device(state))
    tokens, scores, weights = [], [], []
    done = torch.zeros(batch_size, dtype=torch.bool, device=previous.device)
    for _ in range(max_length):
        logits, state, attention = model.step(previous, state, memory)
        logp = _log_probs(logits)
        best, previous = logp.max(dim=1)  # [N], [N]
        tokens.append(previous)
        scores.append(torch.where(done, 0.0, best))
        weights.append(attention)
        done = done | (previous == EOS_ID)
        if bool(done.all()):
            break
    ids = torch.stack(tokens, 1).tolist()  # [N, steps]
    total = torch.stack(scores, 1).cumsum(1)  # [N, steps]
    attention_all = torch.stack(weights, 1)  # [N, steps, S]
    out = []
    for row, seq in enumerate(ids):
        steps = seq.index(EOS_ID) + 1 if EOS_ID in seq else len(seq)
        score = float(total[row, steps - 1])
        out.append(
            Hypothesis(
                seq[:steps] if EOS_ID not in seq else seq[: steps - 1],
                score,
                score / length_penalty(steps, alpha),
                attention_all[row, :steps].cpu(),
                EOS_ID in seq,
            )
        )
    return out


def _device(state: Any) -> torch.device:
    while not isinstance(state, Tensor):
        state = state[0]
    return state.device


@torch.no_grad()
def beam_search(
    model: StepDecoder,
    memory: Any,
    state: Any,
    batch_size: int,
    beam: int,
    max_length: int,
    alpha: float = 0.6,
    n_best: int = 1,
) -> list[list[Hypothesis]]:
    """The ``n_best`` hypotheses per source (best first), ``beam`` open beams per source.

    Each step scores all K * V continuations of a source's open beams, keeps the best 2K:
    those ending in <eos> become finished hypotheses, the best K others stay open.
    """
    if beam < 1 or n_best < 1 or max_length < 1:
        raise ValueError(
            f"beam, n_best and max_length must be >= 1, got {beam}, {n_best}, {max_length}"
        )
    B, K = batch_size, beam
    device = _device(state)
    memory = memory.repeat(K)
    state = _index(state, torch.arange(B, device=device).repeat_interleave(K))  # [B*K, ...]
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one open beam per source at the start
    previous = torch.full((B * K,), BOS_ID, dtype=torch.int64, device=device)
    history = torch.zeros(B * K, 0, dtype=torch.int64, device=device)  # [B*K, t]
    attention_history: Tensor | None = None  # [B*K, t, S]
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    active = torch.ones(B, dtype=torch.bool, device=device)  # still searching
    best_finished = torch.full((B,), float("-inf"), dtype=torch.float64, device=device)
    count = torch.zeros(B, dtype=torch.int64, device=device)
    done = [False] * B
    bound_lp = length_penalty(max_length, alpha)
    for t in range(1, max_length + 1):
        logits, state, attention = model.step(previous, state, memory)
        logp = _log_probs(logits)  # [B*K, V]
        V = logp.shape[1]
        candidates = (scores.to(logp.dtype).reshape(-1, 1) + logp).reshape(B, K * V)
        top_scores, top_index = candidates.topk(min(2 * K, K * V), dim=1)  # [B, 2K]
        attention_now = attention[:, None, :]
        steps = (
            attention_now
            if attention_history is None
            else torch.cat([attention_history, attention_now], dim=1)
        )  # [B*K, t, S]
        # Candidates in score order: each <eos> before the K-th open one finishes a
        # hypothesis; the first K others stay open, in slots 0..K-1 of their source.
        token, beam_of = top_index % V, top_index // V  # [B, 2K]
        live = (top_scores > float("-inf")) & active[:, None]
        is_eos = token == EOS_ID
        opening = live & ~is_eos
        rank = opening.cumsum(1)  # open candidates up to and including this one
        keep = opening & (rank <= K)
        ends = live & is_eos & (rank < K)  # rank: the open ones strictly before it
        b_idx, c_idx = keep.nonzero(as_tuple=True)
        slot = b_idx * K + rank[b_idx, c_idx] - 1
        rows = torch.arange(B * K, device=device)  # where each new beam comes from
        rows[slot] = b_idx * K + beam_of[b_idx, c_idx]
        new_tokens = torch.full((B * K,), PAD_ID, dtype=torch.int64, device=device)
        new_tokens[slot] = token[b_idx, c_idx]
        new_scores = torch.full((B * K,), float("-inf"), dtype=logp.dtype, device=device)
        new_scores[slot] = top_scores[b_idx, c_idx]
        lp = length_penalty(t, alpha)
        for b, c in ends.nonzero().tolist():  # few: at most K per source and step
            row, value = b * K + int(beam_of[b, c]), float(top_scores[b, c])
            finished[b].append(
                Hypothesis(history[row].tolist(), value, value / lp, steps[row].cpu(), True)
            )
            best_finished[b] = max(float(best_finished[b]), value / lp)
            count[b] += 1
        history = torch.cat([history[rows], new_tokens[:, None]], dim=1)
        attention_history = steps[rows]
        state, previous, scores = _index(state, rows), new_tokens, new_scores.view(B, K)
        best_open = scores.max(1).values  # [B]
        stop = (best_open == float("-inf")) | (
            (count >= n_best) & (best_finished >= best_open / bound_lp)
        )
        stop &= active
        scores[stop] = float("-inf")
        active &= ~stop
        done = (~active).tolist()
        if all(done):
            break
    for b in range(B):  # open beams cut at max_length
        if done[b]:
            continue
        for k in range(K):
            value = float(scores[b, k])
            if value > float("-inf"):
                row = b * K + k
                assert attention_history is not None
                finished[b].append(
                    Hypothesis(
                        history[row].tolist(),
                        value,
                        value / length_penalty(history.shape[1], alpha),
                        attention_history[row].cpu(),
                        False,
                    )
                )
    return [sorted(hyps, key=lambda h: -h.normalised)[:n_best] for hyps in finished]


@torch.no_grad()
def decode(
    model: Any,
    source: Tensor,
    lengths: Tensor,
    beam: int = 1,
    max_length: int = 50,
    alpha: float = 0.6,
) -> list[Hypothesis]:
    """The best hypothesis for each source of a batch: greedy for ``beam`` 1, else beam
    search. ``model`` has ``encode(source, lengths) -> (memory, state)`` and ``step``."""
    memory, state = model.encode(source, lengths)
    if beam == 1:
        return greedy(model, memory, state, source.shape[0], max_length, alpha)
    found = beam_search(model, memory, state, source.shape[0], beam, max_length, alpha)
    return [hyps[0] for hyps in found]
