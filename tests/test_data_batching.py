"""Language-model batches: layout, next-token targets, state carry, determinism, resume."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rnnkit.tasks.lm.batching import LMBatches, split_train_valid

N, B, BPTT = 1003, 7, 10
L = N // B  # 143 tokens per stream; the last N - B * L = 2 tokens are dropped


def corpus(n: int = N) -> torch.Tensor:
    return torch.randint(0, 50, (n,), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("variable_bptt", [False, True])
def test_shapes_and_dtype(variable_bptt):
    batches = LMBatches(corpus().to(torch.int32), B, BPTT, variable_bptt=variable_bptt)
    windows = list(batches)
    assert len(windows) == len(batches) == batches.num_windows(0)
    assert [x.shape[0] for x, _ in windows] == batches.lengths(0)
    for x, y in windows:
        assert x.dtype == y.dtype == torch.int64
        assert x.shape == y.shape
        assert x.shape[1] == B
    assert sum(batches.lengths(0)) == L - 1  # every token of a stream is a target once
    assert batches.num_tokens == (L - 1) * B


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 400),
    batch_size=st.integers(1, 9),
    bptt=st.integers(1, 12),
    variable_bptt=st.booleans(),
    seed=st.integers(0, 3),
    epoch=st.integers(0, 3),
)
def test_windows_tile_every_stream_exactly(n, batch_size, bptt, variable_bptt, seed, epoch):
    assume(n >= 2 * batch_size)
    ids = torch.arange(n)
    batches = LMBatches(ids, batch_size, bptt, variable_bptt=variable_bptt, seed=seed)
    windows = list(batches.windows(epoch))
    assert len(windows) == batches.num_windows(epoch)
    L = n // batch_size
    inputs = torch.cat([x for x, _ in windows])  # [L - 1, B]
    targets = torch.cat([y for _, y in windows])
    expected = ids[: batch_size * L].view(batch_size, L).t()  # [L, B]
    assert torch.equal(inputs, expected[:-1])
    assert torch.equal(targets, expected[1:])
    if not variable_bptt:
        assert all(x.shape[0] == bptt for x, _ in windows[:-1])


def test_fixed_bptt_window_count_and_short_last_window():
    batches = LMBatches(corpus(), B, BPTT)
    assert len(batches) == math.ceil((L - 1) / BPTT) == 15
    assert batches.lengths() == [BPTT] * 14 + [2]


@pytest.mark.parametrize("variable_bptt", [False, True])
def test_streams_are_contiguous_slices_and_targets_are_next_tokens(variable_bptt):
    ids = corpus()
    batches = LMBatches(ids, B, BPTT, variable_bptt=variable_bptt, seed=3)
    windows = list(batches.windows(epoch=2))
    inputs = torch.cat([x for x, _ in windows])  # [L - 1, B]
    targets = torch.cat([y for _, y in windows])
    for b in range(B):
        stream = ids[b * L : (b + 1) * L]
        assert torch.equal(inputs[:, b], stream[:-1])
        assert torch.equal(targets[:, b], stream[1:])


def test_state_carry_layout():
    # Window k + 1 of stream b continues window k of stream b: its first input is the
    # last target of window k, so the carried hidden state belongs to the same text.
    batches = LMBatches(corpus(), B, BPTT, variable_bptt=True)
    windows = list(batches)
    for (x0, y0), (x1, _) in itertools.pairwise(windows):
        assert torch.equal(x1[0], y0[-1])
        assert torch.equal(y0[:-1], x0[1:])


def test_variable_bptt_is_deterministic_per_seed_and_epoch():
    ids = corpus(20_000)

    def schedule(seed, epoch):
        return LMBatches(ids, 4, 35, variable_bptt=True, seed=seed).lengths(epoch)

    assert schedule(0, 0) == schedule(0, 0)
    assert schedule(0, 1) == schedule(0, 1)
    assert schedule(0, 0) != schedule(0, 1)
    assert schedule(0, 0) != schedule(1, 0)
    a = LMBatches(ids, 4, 35, variable_bptt=True, seed=5)
    b = LMBatches(ids, 4, 35, variable_bptt=True, seed=5)
    for (xa, ya), (xb, yb) in zip(a.windows(3), b.windows(3), strict=True):
        assert torch.equal(xa, xb)
        assert torch.equal(ya, yb)
    # Fixed bptt is the same every epoch.
    fixed = LMBatches(ids, 4, 35)
    assert fixed.lengths(0) == fixed.lengths(7)


def test_variable_bptt_bounds_and_distribution():
    bptt = 70
    batches = LMBatches(corpus(200_000), 2, bptt, variable_bptt=True, seed=0)
    lengths = [T for epoch in range(3) for T in batches.lengths(epoch)[:-1]]  # last is cut
    assert min(lengths) >= 5
    assert max(lengths) <= bptt + 40
    halves = sum(T < 0.75 * bptt for T in lengths) / len(lengths)
    assert 0.02 < halves < 0.09  # about 5% of windows are drawn around bptt / 2
    full = [T for T in lengths if T >= 0.75 * bptt]
    assert abs(sum(full) / len(full) - bptt) < 1.0
    assert 0 < batches.lengths(0)[-1] <= bptt + 40


def test_variable_bptt_never_below_five():
    batches = LMBatches(corpus(5000), 1, 4, variable_bptt=True)
    assert min(batches.lengths()[:-1]) >= 5


@pytest.mark.parametrize("variable_bptt", [False, True])
def test_resume_with_start_yields_the_remaining_windows(variable_bptt):
    batches = LMBatches(corpus(), B, BPTT, variable_bptt=variable_bptt, seed=9)
    whole = list(batches.windows(epoch=4))
    for start in (0, 1, 6, len(whole) - 1, len(whole)):
        resumed = list(batches.windows(epoch=4, start=start))
        assert len(resumed) == len(whole) - start
        for (x, y), (xr, yr) in zip(whole[start:], resumed, strict=True):
            assert torch.equal(x, xr)
            assert torch.equal(y, yr)
    # A fresh object (as after a restart) gives the same windows.
    again = LMBatches(corpus(), B, BPTT, variable_bptt=variable_bptt, seed=9)
    assert [x.tolist() for x, _ in again.windows(4, start=3)] == [x.tolist() for x, _ in whole[3:]]


def test_set_epoch_drives_len_and_iter():
    batches = LMBatches(corpus(20_000), 4, 35, variable_bptt=True)
    batches.set_epoch(2)
    assert len(batches) == batches.num_windows(2)
    assert [x.shape[0] for x, _ in batches] == batches.lengths(2)


def test_strided_input_and_windows_are_views_of_one_buffer():
    ids = corpus(2 * N)[::2]  # not contiguous
    batches = LMBatches(ids, B, BPTT)
    x, y = next(iter(batches))
    assert torch.equal(x[:, 1], ids[L : L + BPTT])
    assert torch.equal(y[:, 1], ids[L + 1 : L + 1 + BPTT])
    assert x.is_contiguous()
    assert x.data_ptr() == batches.data.data_ptr()  # no copy per window


def test_device_argument_keeps_windows_there():
    batches = LMBatches(corpus(), B, BPTT, device="cpu")
    x, y = next(iter(batches))
    assert x.device.type == y.device.type == "cpu"


def test_too_small_corpus():
    with pytest.raises(
        ValueError,
        match=r"a corpus of 13 tokens is too small for batch_size=7 streams of at least 2 "
        r"tokens each \(needs at least 14 tokens\)",
    ):
        LMBatches(corpus(13), 7, BPTT)
    batches = LMBatches(corpus(14), 7, BPTT)  # the minimum: one window of one step
    assert [x.shape for x, _ in batches] == [(1, 7)]


def test_bad_arguments():
    ids = corpus()
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        LMBatches(ids, 0, BPTT)
    with pytest.raises(ValueError, match=r"bptt must be a positive integer, got 2\.5"):
        LMBatches(ids, B, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        LMBatches(ids, B, BPTT, seed=-1)
    with pytest.raises(ValueError, match=r"ids must be a 1-D tensor of integer token ids"):
        LMBatches(ids.float(), B, BPTT)
    with pytest.raises(ValueError, match=r"got dtype torch.int64 and shape \(7, 143\)"):
        LMBatches(ids[: B * L].view(B, L), B, BPTT)
    with pytest.raises(TypeError, match=r"ids must be a torch\.Tensor, got list"):
        LMBatches([1, 2, 3], 1, BPTT)  # type: ignore[arg-type]
    batches = LMBatches(ids, B, BPTT)
    with pytest.raises(ValueError, match=r"start must be an integer in \[0, 15\].*got 16"):
        batches.windows(0, start=16)
    with pytest.raises(ValueError, match="epoch must be a non-negative integer, got -1"):
        batches.windows(-1)


def test_split_train_valid():
    ids = torch.arange(100)
    train, valid = split_train_valid(ids, 0.1)
    assert torch.equal(train, torch.arange(90))
    assert torch.equal(valid, torch.arange(90, 100))
    train, valid = split_train_valid(torch.arange(3), 0.5)
    assert len(train) + len(valid) == 3
    assert len(train) >= 1
    assert len(valid) >= 1
    for bad in (0, 1, -0.1, 1.5, True):
        with pytest.raises(
            ValueError, match=rf"valid_fraction must be a number in \(0, 1\), got {bad}"
        ):
            split_train_valid(ids, bad)
    with pytest.raises(ValueError, match=r"valid_fraction=0.001 of 100 tokens leaves 100 for"):
        split_train_valid(ids, 0.001)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
@pytest.mark.parametrize("variable_bptt", [False, True])
@pytest.mark.parametrize("batch_size, bptt", [(1, 7), (3, 1), (7, 10), (16, 35)])
def test_memory_mapped_ids_give_the_windows_of_the_int64_tensor(
    tmp_path, dtype, variable_bptt, batch_size, bptt
):
    ids = corpus(3001)  # int64, values < 50
    path = tmp_path / "ids.bin"
    ids.numpy().astype(dtype).tofile(path)
    mapped = np.memmap(path, dtype=dtype, mode="r", shape=(3001,))
    reference = LMBatches(ids, batch_size, bptt, variable_bptt=variable_bptt, seed=4)
    lean = LMBatches(mapped, batch_size, bptt, variable_bptt=variable_bptt, seed=4)
    assert lean.stream_length == reference.stream_length
    assert torch.equal(lean.data, reference.data)
    for epoch in (0, 3):
        assert lean.lengths(epoch) == reference.lengths(epoch)
        n = reference.num_windows(epoch)
        for start in (0, 1, n // 2, n):
            pairs = zip(reference.windows(epoch, start), lean.windows(epoch, start), strict=True)
            for (x, y), (xl, yl) in pairs:
                assert xl.dtype == yl.dtype == torch.int64
                # row-major, as the tensor's windows: a one-step window's targets
                # flattened must be one contiguous array (the LM loss's kernel reads it)
                assert xl.is_contiguous() and yl.is_contiguous()
                assert torch.equal(x, xl)
                assert torch.equal(y, yl)


def test_numpy_ids_are_not_copied_and_splits_are_views(tmp_path):
    path = tmp_path / "ids.bin"
    corpus(2000).numpy().astype(np.uint8).tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=(2000,))
    train, valid = split_train_valid(mapped, 0.1)
    assert np.shares_memory(train, mapped)
    assert np.shares_memory(valid, mapped)
    batches = LMBatches(train, B, BPTT)
    assert np.shares_memory(batches._grid, mapped)  # the streams are a view, not a copy
    strided = LMBatches(np.arange(2 * N)[::2], B, BPTT)  # a strided array works too
    assert torch.equal(strided.data, torch.arange(0, 2 * N, 2)[: B * L].view(B, L).t())


def test_bad_numpy_ids():
    with pytest.raises(
        ValueError,
        match=r"ids must be a 1-D array of integer token ids, got "
        r"dtype float64 and shape \(10,\)",
    ):
        LMBatches(np.zeros(10), 1, BPTT)
    with pytest.raises(ValueError, match=r"got dtype bool and shape \(10,\)"):
        LMBatches(np.zeros(10, dtype=bool), 1, BPTT)
    with pytest.raises(ValueError, match=r"got dtype uint8 and shape \(2, 5\)"):
        LMBatches(np.zeros((2, 5), dtype=np.uint8), 1, BPTT)
