"""`rnnkit bench --quick` end to end: the CI smoke run of the benchmark harness.

It checks that the harness runs and writes well-formed CSV and JSON; it asserts nothing
about speed (a tiny shape on a shared machine measures noise).
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.nn import kernels
from rnnkit.nn.cells import CELLS
from rnnkit.nn.kernels import gemm
from rnnkit.tools import bench


def _run(*args: str) -> str:
    # One thread: on a loaded machine, two OpenMP threads at tiny sizes spend seconds in
    # barriers, and the smoke run is about the harness, not the speed.
    result = CliRunner().invoke(app, ["bench", "--quick", "--threads", "1", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _positive(value) -> bool:
    return value is not None and math.isfinite(float(value)) and float(value) > 0


def test_quick_run_writes_csv_and_json(tmp_path):
    output = _run("--cells", "gru,gru_reset_before", "--no-memory", "--out", str(tmp_path / "b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv", "b.json"]  # no temp files

    with open(tmp_path / "b.csv", newline="") as f:
        lines = list(csv.DictReader(f))
    data = json.loads((tmp_path / "b.json").read_text())
    rows = data["rows"]
    cells = ("gru", "gru_reset_before")
    expected = [(c, "stream") for c in cells] + [(c, "tiny") for c in cells]
    assert [(r["cell"], r["shape"]) for r in rows] == expected
    assert [(r["cell"], r["shape"]) for r in lines] == expected
    assert set(lines[0]) == set(rows[0])

    assert data["machine"]["torch"] == torch.__version__
    assert data["machine"]["threads"] >= 1 and data["machine"]["cpu"]
    assert data["complete"] and _positive(data["gemm_peak_gflops"])
    assert {r["baseline"] for r in rows} == {"torch.nn.GRU", "rnnkit composite"}
    for row, line in zip(rows, lines, strict=True):
        assert row["ran_fwd"] and row["backend"] == kernels.get_backend()
        assert _positive(row["fwd_ms"]) and _positive(row["fwd_speedup"])
        assert float(line["fwd_speedup"]) == pytest.approx(row["fwd_speedup"])
        if row["shape"] != "stream":
            for key in ("train_ms", "train_speedup", "train_gflops", "train_peak_fraction"):
                assert _positive(row[key]), key
    assert "gru_reset_before vs rnnkit composite" in output

    # Which fp32 GEMM library ran, per row and per shape bucket, and each one's peak.
    from rnnkit.nn.kernels import gemm

    peaks = data["machine"]["gemm_library_peaks_gflops"]
    assert set(peaks) == {c for c in gemm.CANDIDATES if gemm.available(c)}
    assert all(_positive(v) for v in peaks.values())
    assert "fp32 GEMM libraries of the fused kernel" in output
    for row in rows:
        fused_fp32 = row["ran_fwd"].startswith("fused") and row["dtype"] == "float32"
        fused_fp32 = fused_fp32 and row["shape"] != "stream"  # the step has its own products
        assert (row["gemm"] in gemm.CANDIDATES) if fused_fp32 else row["gemm"] is None
    assert "fp32 GEMM library per shape bucket" in output
    assert set(data["gemm_choices"]["buckets"].values()) <= set(gemm.CANDIDATES)
    assert "first-use compile cost" in output
    assert data["memory_method"].startswith("not measured")
    assert all(row["mem_train_mib"] is None for row in rows)

    varlen = data["varlen"]  # one tiny variable-length case per cell
    assert [(r["cell"], r["T"]) for r in varlen] == [(c, bench.QUICK_SHAPE.T) for c in cells]
    for r in varlen:
        assert r["tokens"] <= r["T"] * r["B"] and r["full_B"] >= 1
        for key in ("fwd_ms", "packed_fwd_ms", "full_fwd_ms", "train_ms", "packed_train_ms"):
            assert _positive(r[key]), key
        assert r["train_vs_packed"] == pytest.approx(r["packed_train_ms"] / r["train_ms"])
        assert r["train_vs_full"] == pytest.approx(r["train_ms"] / r["full_train_ms"])
    assert "variable lengths uniform in [T/10, T]" in output


def test_memory_probe_reports_the_peak_a_call_adds():
    config = bench.BenchConfig.quick(threads=1)
    shape = bench.Shape("probe", 50, 64, 64, 256)  # train keeps > 3 MiB of activations
    peak = bench._measure_memory(CELLS["rnn_tanh"], shape, config, 1, "ours")  # a subprocess
    if peak["train"] is None:
        pytest.skip("the peak-RSS mark cannot be reset here (/proc/self/clear_refs)")
    assert peak["train"] > 1 and peak["fwd"] >= 0


@pytest.mark.parametrize(
    "args",
    [["--cells", "nope"], ["--shapes", "S9"], ["--repeats", "0"], ["--varlen", "10,x"]],
)
def test_bad_options_fail_with_a_message(args):
    result = CliRunner().invoke(app, ["bench", "--quick", *args])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and result.output.count("\n") == 1


def test_shapes_parse_names_and_custom_sizes():
    assert [s.name for s in bench.parse_shapes("S1,S3")] == ["S1", "S3"]
    (custom,) = bench.parse_shapes("10,2,3,4")
    assert (custom.T, custom.B, custom.D, custom.H) == (10, 2, 3, 4)
    assert [s.B for s in bench.parse_shapes("S4,5x1x2x3")] == [128, 1]


def test_varlen_parses_lengths_and_none():
    assert bench.parse_varlen("100,400") == (100, 400)
    assert bench.parse_varlen("none") == ()
    with pytest.raises(ValueError, match="at least 1"):
        bench.parse_varlen("0")


def test_gemm_flops_formula():
    forward, total = bench.gemm_flops(CELLS["lstm"], bench.SHAPES["S1"])
    assert forward == 2 * 100 * 32 * (4 * 256) * (128 + 256)
    assert total == 3 * forward


def test_bench_bounds_smoke():
    """`python -m rnnkit.tools.bench_bounds` on a tiny shape: every time positive, the ratios
    consistent with the times. Nothing about speed."""
    from rnnkit.tools.bench_bounds import main

    bounds = main(
        [
            "--cells",
            "gru,gru_reset_before",
            "--shapes",
            "4x2x3x5",
            "--repeats",
            "1",
            "--peak-size",
            "64",
            "--stream-calls",
            "2",
        ]
    )
    assert [b.cell for b in bounds] == ["gru", "gru_reset_before"]
    for b in bounds:
        assert b.library in gemm.CANDIDATES  # the floor runs the kernel's own library
        assert min(b.ours_ms, b.baseline_ms, b.floor_ms, b.floor_gflops, b.peak_gflops) > 0
        assert b.ceiling == pytest.approx(b.baseline_ms / b.floor_ms)
        assert b.speedup == pytest.approx(b.baseline_ms / b.ours_ms)


@pytest.mark.parametrize("library", gemm.CANDIDATES)
def test_the_floor_runs_in_every_gemm_library(library):
    from rnnkit.tools.bench_bounds import gemm_only

    if not gemm.available(library):
        pytest.skip(f"{library} is not available here")
    gemm_only(CELLS["gru_reset_before"], bench.Shape("t", 3, 2, 4, 5), torch.float32, library)()


def test_a_bf16_autocast_run_times_both_under_autocast(tmp_path):
    output = _run(
        "--cells", "lstm,gru", "--dtype", "bfloat16", "--no-memory", "--out", str(tmp_path / "b")
    )
    data = json.loads((tmp_path / "b.json").read_text())
    assert "(fp32 weights under bf16 autocast)" in output
    peaks = data["machine"]["gemm_peaks_gflops"]
    assert set(peaks) == {"float32", "bfloat16"} and all(_positive(v) for v in peaks.values())
    assert data["gemm_peak_gflops"] == peaks["bfloat16"]
    assert all(r["dtype"] == "bfloat16" and _positive(r["fwd_ms"]) for r in data["rows"])
    assert {r["baseline"] for r in data["rows"]} == {"torch.nn.LSTM", "torch.nn.GRU"}
    assert bench._autocast["dtype"] is None  # switched off after the run
