"""Padded mini-batches of variable-length examples (classification, tagging)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor


def pad(sequences: Sequence[Sequence[int]], value: int = 0) -> tuple[Tensor, Tensor]:
    """-> (ids [B, T] int64 padded with ``value``, lengths [B])."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    ids = torch.full((len(sequences), max(int(lengths.max()), 1)), value, dtype=torch.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.int64)
    return ids, lengths


def length_mask(lengths: Tensor, T: int) -> Tensor:
    """lengths [B] -> [B, T] bool, True at the steps within each sequence."""
    return torch.arange(T, device=lengths.device)[None] < lengths[:, None]


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices per batch, shuffled reproducibly from (seed, epoch); epoch 0 keeps
    the data's order (evaluation)."""
    if epoch == 0:
        order = list(range(n))
    else:
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def batches(n: int, batch_size: int, seed: int, epoch: int, start: int = 0) -> Iterator[list[int]]:
    yield from batch_order(n, batch_size, seed, epoch)[start:]
