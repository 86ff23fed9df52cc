"""A linear-chain conditional random field over tag sequences (Lafferty et al. 2001),
the output layer of the BiLSTM-CRF tagger (Lample et al. 2016, section 2.2).

For emissions e [B, T, K] (a score per token and tag) and tags y, the score is
    s(y) = start[y_0] + sum_t e[t, y_t] + sum_{t>0} A[y_{t-1}, y_t] + end[y_{L-1}]
and log p(y) = s(y) - log Z with log Z = logsumexp over all K^L sequences, computed by
the forward algorithm in O(L K^2). Decoding is Viterbi. Transitions a tag scheme forbids
(``schemes.allowed_transitions``) get a fixed score of -1e4, so they are never decoded and
their probability is negligible while every gradient stays finite.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FORBIDDEN = -1e4


class CRF(nn.Module):
    """transitions [K, K] (from, to), start [K] and end [K] scores, learned."""

    transition_penalty: Tensor
    start_penalty: Tensor
    end_penalty: Tensor

    def __init__(
        self,
        num_tags: int,
        allowed: list[list[bool]] | None = None,
        may_start: list[bool] | None = None,
        may_end: list[bool] | None = None,
    ) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be positive, got {num_tags}")
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))

        def penalty(mask: list | None, shape: tuple[int, ...]) -> Tensor:
            if mask is None:
                return torch.zeros(shape)
            m = torch.tensor(mask, dtype=torch.bool)
            if tuple(m.shape) != shape:
                raise ValueError(f"constraint shape {tuple(m.shape)} != expected {shape}")
            return torch.where(m, 0.0, FORBIDDEN)

        K = num_tags
        self.register_buffer("transition_penalty", penalty(allowed, (K, K)))
        self.register_buffer("start_penalty", penalty(may_start, (K,)))
        self.register_buffer("end_penalty", penalty(may_end, (K,)))

    def _scores(self) -> tuple[Tensor, Tensor, Tensor]:
        return (
            self.transitions + self.transition_penalty,
            self.start + self.start_penalty,
            self.end + self.end_penalty,
        )

    @staticmethod
    def _check(emissions: Tensor, mask: Tensor) -> Tensor:
        if emissions.dim() != 3:
            raise ValueError(f"emissions must be [B, T, K], got shape {tuple(emissions.shape)}")
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask shape {tuple(mask.shape)} != emissions' [B, T]")
        if not bool(mask[:, 0].all()):
            raise ValueError("every sequence needs at least one token (mask[:, 0] all True)")
        return mask.long().sum(1) - 1  # [B]: index of each sequence's last token

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """log Z [B] by the forward algorithm."""
        self._check(emissions, mask)
        trans, start, end = self._scores()
        alpha = start + emissions[:, 0]  # [B, K]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha[:, :, None] + trans, dim=1) + emissions[:, t]
            alpha = torch.where(mask[:, t, None], step, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """s(y) [B] of the given tags [B, T]."""
        last = self._check(emissions, mask)
        trans, start, end = self._scores()
        emitted = emissions.gather(2, tags[..., None])[..., 0]  # [B, T]
        moved = trans[tags[:, :-1], tags[:, 1:]]  # [B, T-1]
        total = start[tags[:, 0]] + emitted[:, 0]
        total = total + ((emitted[:, 1:] + moved) * mask[:, 1:]).sum(1)
        return total + end[tags.gather(1, last[:, None])[:, 0]]

    def neg_log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """-log p(tags) [B]."""
        return self.log_partition(emissions, mask) - self.score(emissions, tags, mask)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """The highest-scoring tag sequence of each sequence (Viterbi), unpadded."""
        last = self._check(emissions, mask)
        trans, start, end = self._scores()
        best = start + emissions[:, 0]  # [B, K]
        pointers = []
        for t in range(1, emissions.shape[1]):
            scores, previous = (best[:, :, None] + trans).max(dim=1)  # [B, K] each
            pointers.append(previous)
            best = torch.where(mask[:, t, None], scores + emissions[:, t], best)
        tag = (best + end).argmax(dim=1)  # [B]
        paths = []
        for b in range(emissions.shape[0]):
            path = [int(tag[b])]
            for t in range(int(last[b]), 0, -1):
                path.append(int(pointers[t - 1][b, path[-1]]))
            paths.append(path[::-1])
        return paths
