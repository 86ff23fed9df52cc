"""rnnkit.train.distributed in one process: the shares of a batch, the environment's
checks, the collectives as no-ops, the LM's columns, the run folder a restarted job finds.
The multi-process behaviour is tests/test_distributed.py (slow, torchrun)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rnnkit.tasks.lm.batching import LMBatches
from rnnkit.train import distributed
from rnnkit.train.distributed import Runtime, shard


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 32])
def test_shares_tile_the_batch_in_rank_order(n, world):
    shares = [shard(n, Runtime(rank, world)) for rank in range(world)]
    assert [i for s in shares for i in range(n)[s]] == list(range(n))  # every row once
    sizes = [s.stop - s.start for s in shares]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "need 0 <= RANK < WORLD_SIZE"),
        ({"WORLD_SIZE": "0"}, "need 0 <= RANK < WORLD_SIZE"),
    ],
)
def test_a_bad_environment_is_named(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        distributed.environment()


def test_one_process_collectives_are_no_ops():
    assert not distributed.current().active and distributed.current().main
    assert distributed.any_rank([True, False]) == [True, False]
    assert distributed.broadcast_json({"a": 1}) == {"a": 1}
    assert distributed.from_main(lambda: [1, 2]) == [1, 2]
    tensors = {"x": torch.ones(2)}
    assert distributed.gather_tensors(tensors) == [tensors]
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    assert distributed.reduce_gradients([p], [6.0, 3.0]) == [6.0, 3.0]
    assert torch.equal(p.grad, torch.full((3,), 2.0))  # untouched: one process divides nothing
    ids, lengths = torch.ones(3, 4, dtype=torch.int64), torch.tensor([4, 2, 1])
    assert distributed.share_rows(ids, lengths) == (ids, lengths)
    assert distributed.share([4, 5, 6]) == [4, 5, 6]


@pytest.mark.parametrize("as_numpy", [False, True])
def test_lm_columns_put_side_by_side_are_the_whole_windows(as_numpy):
    ids = torch.arange(203) % 17
    source = ids.numpy().astype(np.uint8) if as_numpy else ids
    whole = LMBatches(source, 5, 7, variable_bptt=True, seed=3)
    parts = [
        LMBatches(source, 5, 7, variable_bptt=True, seed=3, columns=shard(5, Runtime(r, 2)))
        for r in range(2)
    ]
    assert all(p.num_windows(2) == whole.num_windows(2) for p in parts)
    for k, (inputs, targets) in enumerate(whole.windows(2)):
        shares = [next(p.windows(2, k)) for p in parts]
        assert torch.equal(torch.cat([s[0] for s in shares], 1), inputs)
        assert torch.equal(torch.cat([s[1] for s in shares], 1), targets)


def test_lm_columns_must_be_a_contiguous_non_empty_slice():
    with pytest.raises(ValueError, match="columns must be a non-empty contiguous slice"):
        LMBatches(torch.arange(100), 4, 5, columns=slice(2, 2))
    with pytest.raises(ValueError, match="columns must be a non-empty contiguous slice"):
        LMBatches(torch.arange(100), 4, 5, columns=slice(0, 4, 2))


def test_a_restarted_job_finds_its_run_folder_by_its_id(tmp_path, monkeypatch):
    for name, job in (("run", "other-job"), ("run-2", "this-job")):
        (tmp_path / name / "last").mkdir(parents=True)
        (tmp_path / name / "last" / "state.json").write_text(json.dumps({"run_id": job}))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "this-job")
    assert distributed._restarted_folder(tmp_path / "run") == tmp_path / "run-2"
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "a-third-job")
    assert distributed._restarted_folder(tmp_path / "run") is None
