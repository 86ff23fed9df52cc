"""Language-model batches for truncated backpropagation through time.

The corpus of N tokens is cut into B contiguous streams of L = N // B tokens (the last
N - B * L tokens are dropped) and laid out time-major as ``data`` [L, B]: column b is
the slice ``ids[b * L : (b + 1) * L]``. Window k covers rows [s_k, s_k + T_k) as inputs
and the same rows shifted by one as targets, so row t of window k + 1 continues row
T_k - 1 of window k in every column: the hidden state that the trainer carries (and
detaches) from one window to the next belongs to the same stream of text. This is the
layout of Zaremba et al. 2014's code and of PyTorch's word_language_model ``batchify``.

The ids may be a torch tensor or a NumPy integer array. A tensor is laid out once as an
int64 tensor ``data`` [L, B] (8 bytes a token, on ``device`` if given) and windows are
views of it. A NumPy array (``rnnkit.data.cached_ids``'s memory map of 1- or 2-byte ids)
is never copied: ``data`` is a strided view of it, and each window is gathered from it
and widened to int64 alone, so the corpus costs no resident memory beyond the windows.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch
from numpy.lib.stride_tricks import as_strided
from torch import Tensor

from rnnkit.common.checks import positive_int

# AWD-LSTM's variable BPTT (Merity et al. 2017, section 4.1): the base length is bptt
# with probability 0.95, else bptt / 2; the window length is drawn from
# N(base, VARIABLE_BPTT_STD), at least VARIABLE_BPTT_MIN.
VARIABLE_BPTT_P_FULL = 0.95
VARIABLE_BPTT_STD = 5.0
VARIABLE_BPTT_MIN = 5
# Not in the paper: a cap (8 standard deviations above bptt) so that a freak draw
# cannot make one window long enough to exhaust memory.
VARIABLE_BPTT_MAX_EXTRA = 40


TokenIds = TypeVar("TokenIds", Tensor, np.ndarray)


def _token_ids(name: str, ids: object) -> Tensor | np.ndarray:
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(
                f"{name} must be a 1-D array of integer token ids, got dtype {ids.dtype} "
                f"and shape {ids.shape}"
            )
        return ids
    if not isinstance(ids, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(ids).__name__} "
            "(or a 1-D NumPy array of integer ids)"
        )
    if (
        ids.dim() != 1
        or ids.dtype.is_floating_point
        or ids.dtype.is_complex
        or ids.dtype == torch.bool
    ):
        raise ValueError(
            f"{name} must be a 1-D tensor of integer token ids, got dtype {ids.dtype} "
            f"and shape {tuple(ids.shape)}"
        )
    return ids


def split_train_valid(ids: TokenIds, valid_fraction: float) -> tuple[TokenIds, TokenIds]:
    """The first ``1 - valid_fraction`` of the corpus for training, the tail for validation.

    A contiguous split (no shuffling): a language model's validation text must be text
    it has not seen, not sentences interleaved with its training text. Returns views
    (of a memory map too: nothing is read).
    """
    _token_ids("ids", ids)
    if (
        isinstance(valid_fraction, bool)
        or not isinstance(valid_fraction, int | float)
        or not 0 < valid_fraction < 1
    ):
        raise ValueError(f"valid_fraction must be a number in (0, 1), got {valid_fraction!r}")
    n = ids.shape[0]
    n_valid = round(n * valid_fraction)
    if n_valid < 1 or n_valid > n - 1:
        raise ValueError(
            f"valid_fraction={valid_fraction} of {n} tokens leaves {n - n_valid} for training "
            f"and {n_valid} for validation; both need at least one"
        )
    return ids[: n - n_valid], ids[n - n_valid :]


class LMBatches:
    """The corpus as B parallel streams cut into windows of bptt steps (Zaremba et al. 2014).

    Iterating yields ``(inputs, targets)``, both int64 [T, B] (time-major), with
    ``targets[t] = inputs[t + 1]`` within a window and the last target the first input
    of the next window. T is ``bptt`` except for a shorter last window, or drawn per
    window with ``variable_bptt`` (AWD-LSTM, Merity et al. 2017): then the window
    lengths are reproducible from ``(seed, epoch)`` and differ between epochs; a trainer
    that follows AWD-LSTM scales its learning rate by ``T / bptt``.

    ``windows(epoch, start)`` yields an epoch's windows from window ``start`` on, for
    exact resumption mid-epoch; ``len()`` and plain iteration use ``self.epoch``
    (``set_epoch``), 0 by default.

    ``columns`` (a slice of the B streams) makes the windows hold those streams only: one
    process's share under torchrun (``rnnkit.train.distributed.shard``). The layout, the
    window lengths and their number are those of all B streams, so the shares of all
    processes put side by side are the one-process windows.
    """

    def __init__(
        self,
        ids: Tensor | np.ndarray,
        batch_size: int,
        bptt: int,
        *,
        variable_bptt: bool = False,
        seed: int = 0,
        device: torch.device | str | None = None,
        columns: slice | None = None,
    ):
        ids = _token_ids("ids", ids)
        self.batch_size = positive_int("batch_size", batch_size)
        self.bptt = positive_int("bptt", bptt)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.variable_bptt = bool(variable_bptt)
        self.seed = seed
        self.epoch = 0
        n = ids.shape[0]
        L = n // batch_size
        if L < 2:
            raise ValueError(
                f"a corpus of {n} tokens is too small for batch_size={batch_size} streams of "
                f"at least 2 tokens each (needs at least {2 * batch_size} tokens); use a "
                "smaller batch_size or more text"
            )
        self.stream_length = L
        self.columns = slice(0, batch_size) if columns is None else columns
        first, stop, stride = self.columns.indices(batch_size)
        if stride != 1 or stop <= first:
            raise ValueError(
                f"columns must be a non-empty contiguous slice of the {batch_size} streams, "
                f"got {columns!r}"
            )
        self.device = None if device is None else torch.device(device)
        self._data: Tensor | None = None
        self._grid: np.ndarray | None = None
        if isinstance(ids, np.ndarray):
            # [L, B] view, element [t, b] = ids[b * L + t]: no byte of the corpus is read.
            step = ids.strides[0]
            self._grid = as_strided(ids, (L, batch_size), (step, L * step), writeable=False)
        else:
            # [B, L] -> [L, B]: column b is the contiguous slice b of the corpus.
            data = ids[: batch_size * L].to(torch.int64).reshape(batch_size, L).t().contiguous()
            self._data = data if device is None else data.to(device)
        self._schedules: dict[int, Sequence[int]] = {}

    @property
    def data(self) -> Tensor:
        """The streams as int64 [L, B]. For NumPy ids this is a new copy of the whole
        corpus at every call: for tests and small texts, never for training."""
        if self._data is not None:
            return self._data
        assert self._grid is not None
        return self._to_device(torch.from_numpy(self._grid.astype(np.int64, order="C")))

    def _to_device(self, x: Tensor) -> Tensor:
        return x if self.device is None else x.to(self.device)

    @property
    def num_tokens(self) -> int:
        """Target tokens per epoch: (L - 1) * B."""
        return (self.stream_length - 1) * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """The epoch that ``len()`` and plain iteration use."""
        self.epoch = self._check_epoch(epoch)

    def lengths(self, epoch: int = 0) -> list[int]:
        """The window lengths T of an epoch, in order."""
        starts = np.asarray(self._schedule(epoch), dtype=np.int64)
        return np.diff(starts, append=self.stream_length - 1).tolist()

    def num_windows(self, epoch: int = 0) -> int:
        return len(self._schedule(epoch))

    def __len__(self) -> int:
        return self.num_windows(self.epoch)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.windows(self.epoch)

    def windows(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The windows of ``epoch`` (deterministic per ``(seed, epoch)``), skipping the
        first ``start``: resuming at ``start = k`` yields exactly windows k, k + 1, ..."""
        starts = self._schedule(epoch)
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= len(starts):
            raise ValueError(
                f"start must be an integer in [0, {len(starts)}] (windows in epoch {epoch}), "
                f"got {start!r}"
            )
        return self._windows(starts, start)

    def _windows(self, starts: Sequence[int], first: int) -> Iterator[tuple[Tensor, Tensor]]:
        n, steps = len(starts), self.stream_length - 1
        for k in range(first, n):
            # windows tile the stream: each ends where the next starts
            s, end = int(starts[k]), int(starts[k + 1]) if k + 1 < n else steps
            rows = self._rows(s, end + 1)  # [T + 1, B]
            yield rows[:-1], rows[1:]  # each [T, B], views of rows

    def _rows(self, start: int, stop: int) -> Tensor:
        """Rows [start, stop) of the streams (the ``columns`` ones), int64 [stop - start, B]."""
        if self._data is not None:
            return self._data[start:stop, self.columns]
        assert self._grid is not None
        # astype gathers the B strided slices into one C-contiguous int64 block (its
        # default order "K" would keep the grid's column-major strides, and a window's
        # targets rows[1:] of one step would flatten to a strided view)
        rows = self._grid[start:stop, self.columns]
        return self._to_device(torch.from_numpy(rows.astype(np.int64, order="C")))

    def _check_epoch(self, epoch: int) -> int:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        return epoch

    def _schedule(self, epoch: int) -> Sequence[int]:
        """The window starts of an epoch (a window ends where the next starts)."""
        epoch = self._check_epoch(epoch)
        key = epoch if self.variable_bptt else 0
        if key not in self._schedules:
            if len(self._schedules) > 4:
                self._schedules.clear()
            self._schedules[key] = self._make_schedule(epoch)
        return self._schedules[key]

    def _make_schedule(self, epoch: int) -> Sequence[int]:
        steps = self.stream_length - 1  # the last token of a stream is only a target
        if not self.variable_bptt:
            return range(0, steps, self.bptt)  # no memory however long the corpus
        rng = np.random.default_rng([self.seed, epoch])
        starts = array("q")  # 8 bytes a window, not a Python int each
        s = 0
        while s < steps:
            base = self.bptt if rng.random() < VARIABLE_BPTT_P_FULL else self.bptt / 2
            T = max(VARIABLE_BPTT_MIN, int(rng.normal(base, VARIABLE_BPTT_STD)))
            T = min(T, self.bptt + VARIABLE_BPTT_MAX_EXTRA, steps - s)
            starts.append(s)
            s += T
        return starts

    def __repr__(self) -> str:
        return (
            f"LMBatches(streams={self.batch_size}, stream_length={self.stream_length}, "
            f"bptt={self.bptt}, variable_bptt={self.variable_bptt}, seed={self.seed})"
        )
