"""The GEMM library under the fused kernel (rnnkit.nn.kernels.gemm): every candidate gives
the reference's results within the fp32 error model, the probe skips a missing candidate,
the cache is reused and survives corruption, and RNNKIT_GEMM forces a choice."""

from __future__ import annotations

import json

import pytest
import torch

from error_model import float64_leaves, fp32_truth_and_bounds
from helpers import assert_fp32_close
from registry import FUSED_CELLS
from rnnkit.nn import runner
from rnnkit.nn.kernels import fused, gemm
from test_kernels import _layer_problem, _run_with_grads

pytestmark = pytest.mark.skipif(fused.load() is None, reason="the fused extension did not build")

SHAPES = [  # T, B, D, H, directions, lengths
    ((5, 3, 4, 6, 2), [5, 2, 0]),
    ((4, 1, 3, 5, 1), None),
    ((6, 8, 16, 32, 2), [6, 1, 3, 6, 0, 2, 5, 4]),
]


@pytest.fixture
def cache(monkeypatch, tmp_path):
    """A cache folder of the test's own, no override, and nothing chosen yet."""
    monkeypatch.setenv("RNNKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(gemm.ENV, raising=False)
    gemm.forget()
    yield tmp_path / "gemm.json"
    gemm.forget()


def _available_except(monkeypatch, *missing: str) -> None:
    real = gemm.available
    monkeypatch.setattr(gemm, "available", lambda name: name not in missing and real(name))


@pytest.mark.parametrize("shape, lengths", SHAPES, ids=["bidirectional", "B1", "H32"])
@pytest.mark.parametrize("cell_name", FUSED_CELLS)
def test_every_backend_matches_the_reference(cache, monkeypatch, cell_name, shape, lengths):
    """Each available library's forward and backward within the fp32 error model's bound
    of the exact result (computed once per problem, as in test_kernels.py); fp64 always
    runs dgemm_."""
    cell, x, lengths, states, weights = _layer_problem(cell_name, *shape, torch.float32, lengths)
    x64, states64, weights64 = float64_leaves((x, states, weights))
    truth, bounds = fp32_truth_and_bounds(
        lambda: _run_with_grads(runner.run_layer, cell, x64, lengths, states64, weights64)
    )
    for backend in [b for b in gemm.CANDIDATES if gemm.available(b)]:
        monkeypatch.setenv(gemm.ENV, backend)
        gemm.forget()  # it is read once per process
        actual = _run_with_grads(fused.run_layer, cell, x, lengths, states, weights)
        assert fused.load().gemm_backend() == backend  # it ran
        for k, (a, e, bound) in enumerate(zip(actual, truth, bounds, strict=True)):
            assert_fp32_close(a, e, bound, f"{backend} tensor #{k} (out, finals, then grads)")


def test_the_streaming_step_does_not_depend_on_the_gemm_library(cache, monkeypatch):
    """fused.step has matrix-vector products of its own: the same bits under every library
    a previous layer call may have left set."""
    cell, x, _, states, weights = _layer_problem("lstm", 1, 2, 5, 7, 1, torch.float32, None)
    results = []
    with torch.no_grad():
        for backend in [b for b in gemm.CANDIDATES if gemm.available(b)]:
            monkeypatch.setenv(gemm.ENV, backend)
            gemm.forget()
            fused.run_layer(cell, x, None, states, weights)  # leaves the library set
            assert fused.load().gemm_backend() == backend
            results.append(fused.step(cell, x[0], states[0], weights[0])[0])
    assert all(torch.equal(r, results[0]) for r in results)


def test_probe_skips_a_missing_candidate(cache, monkeypatch):
    _available_except(monkeypatch, "onednn")
    medians = gemm.probe(2, 16, 8)
    assert "onednn" not in medians
    assert ("mkl" in medians) == gemm.available("mkl")
    assert gemm.choose(2, 16, 8) in ("mkl", "aten")


def test_without_mkl_and_onednn_the_choice_falls_back_to_aten(cache, monkeypatch):
    _available_except(monkeypatch, "mkl", "onednn")
    assert gemm.choose(3, 12, 4) == "aten"
    assert set(
        json.loads(cache.read_text())["machines"][gemm.machine_key()]["4x16x4"]["seconds"]
    ) == {"aten"}


def test_pick_keeps_the_default_unless_beaten_by_the_margin():
    assert gemm.pick({"mkl": 1.0, "onednn": 0.97, "aten": 0.99}) == "mkl"
    assert gemm.pick({"mkl": 1.0, "onednn": 0.9, "aten": 0.99}) == "onednn"
    assert gemm.pick({"onednn": 2.0, "aten": 1.0}) == "aten"
    assert gemm.pick({}) == gemm.FALLBACK


def test_the_cache_is_reused_across_processes(cache):
    first = gemm.choose(4, 24, 8)
    assert gemm.probes == 1
    assert gemm.choose(3, 20, 7) == first  # the same bucket, 4x32x8
    assert gemm.probes == 1
    gemm.forget()  # as a new process: nothing in memory, the file is there
    assert gemm.choose(4, 24, 8) == first
    assert gemm.probes == 0
    entry = json.loads(cache.read_text())["machines"][gemm.machine_key()]["4x32x8"]
    assert entry["choice"] == first and first in entry["seconds"]


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", '{"version": 1, "machines": 3}', '{"version": 1, "machines": {"%s": 3}}'],
)
def test_a_corrupt_cache_is_probed_again(cache, content):
    cache.write_text(content.replace("%s", gemm.machine_key()))
    assert gemm.choose(2, 8, 8) in gemm.CANDIDATES
    assert gemm.probes == 1
    json.loads(cache.read_text())  # rewritten whole


def test_a_cached_choice_that_is_no_longer_available_is_probed_again(cache, monkeypatch):
    key = gemm.machine_key()
    data = {"version": 1, "machines": {key: {"2x8x8": {"choice": "onednn", "seconds": {}}}}}
    cache.write_text(json.dumps(data))
    _available_except(monkeypatch, "onednn")
    assert gemm.choose(2, 8, 8) != "onednn"
    assert gemm.probes == 1


def test_an_unwritable_cache_still_chooses(cache, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("RNNKIT_CACHE_DIR", str(blocker))  # a file, not a folder
    assert gemm.choose(2, 8, 8) in gemm.CANDIDATES


def test_override_forces_a_backend_without_probing(cache, monkeypatch):
    monkeypatch.setenv(gemm.ENV, "aten")
    assert gemm.choose(64, 512, 128) == "aten"
    assert gemm.probes == 0 and not cache.exists()


def test_override_with_an_unknown_name_says_what_is_allowed(cache, monkeypatch):
    monkeypatch.setenv(gemm.ENV, "cublas")
    with pytest.raises(
        ValueError, match=r"RNNKIT_GEMM must be one of mkl, onednn, aten, got 'cublas'"
    ):
        gemm.choose(1, 4, 4)


def test_override_with_a_missing_library_is_an_error(cache, monkeypatch):
    _available_except(monkeypatch, "onednn")
    monkeypatch.setenv(gemm.ENV, "onednn")
    with pytest.raises(ValueError, match=r"RNNKIT_GEMM=onednn .* not available here"):
        gemm.choose(1, 4, 4)


def test_the_extension_refuses_an_unknown_backend():
    with pytest.raises(RuntimeError, match="unknown GEMM backend 'blis'"):
        fused.load().set_gemm_backend("blis")


def test_the_probe_tool_prints_every_available_library(capsys, cache, one_thread):
    from rnnkit.tools import gemm_probe

    gemm_probe.main(["--threads", "1", "--rounds", "1", "--shapes", "2x48x16", "--peak-size", "32"])
    out = capsys.readouterr().out
    names = [c for c in gemm.CANDIDATES if gemm.available(c)]
    assert out.splitlines()[1].split()[-len(names) - 1 :] == [*names, "choice"]
    assert out.splitlines()[2].split()[-1] in names
    assert out.splitlines()[3].startswith("32^3: ")
    assert not cache.exists()  # it measures only


def test_layer_seconds_scales_the_products_and_counts_the_packing_once():
    # projection 1, step 1 = 5 (packing 3 + step 2), steps 2..4 = 2, gradient 1; s = 4
    seconds = gemm.layer_seconds([1.0, 5.0, 2.0, 2.0, 2.0, 1.0])
    assert seconds == pytest.approx(gemm.LAYER_STEPS / 4 * (1 + 4 * 2 + 1) + 3)


def test_a_choice_is_made_per_thread_count(cache):
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            gemm.choose(2, 8, 8)
    finally:
        torch.set_num_threads(threads)
    assert gemm.probes == 2
    assert len(json.loads(cache.read_text())["machines"]) == 2
    assert set(gemm.chosen()["buckets"]) == {"2x8x8@1", "2x8x8@2"}


def test_probing_leaves_torchs_random_numbers_alone(cache):
    """A probe runs at a layer's first call: a seeded run must draw the same numbers
    whether this machine's choice was cached or not."""
    torch.manual_seed(5)
    gemm.choose(2, 8, 8)
    assert gemm.probes == 1
    drawn = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), drawn)
