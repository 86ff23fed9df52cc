"""`rnnkit bench`: time rnnkit's layers against torch.nn (see ``rnnkit.tools.bench``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from rnnkit.cli import app
from rnnkit.common.names import CELL_NAMES

# ``rnnkit.tools.bench.BenchConfig``'s defaults, written out so that `--help` does not
# import torch (tests/test_cli_help.py checks that they agree).
DEFAULT_REPEATS, DEFAULT_WARMUP, DEFAULT_DTYPE, DEFAULT_MEMORY = 5, 1, "float32", True


@app.command()
def bench(
    cells: Annotated[
        str,
        typer.Option(
            help="'all' (those with a fused kernel) or comma-separated: " + ",".join(CELL_NAMES)
        ),
    ] = "all",
    shapes: Annotated[
        str | None,
        typer.Option(
            help="'all', comma-separated names (S1,S2,S3,S4), or a custom 'T,B,D,H' / "
            "TxBxDxH. Default: all, or the tiny shape with --quick."
        ),
    ] = None,
    varlen: Annotated[
        str | None,
        typer.Option(
            help="T of each variable-length case, comma-separated, or 'none'. "
            "Default: 100,400, or the tiny shape with --quick."
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(help=f"Timed calls per case, median reported. Default {DEFAULT_REPEATS}."),
    ] = None,
    warmup: Annotated[
        int | None, typer.Option(help=f"Untimed calls before timing. Default {DEFAULT_WARMUP}.")
    ] = None,
    dtype: Annotated[
        str,
        typer.Option(
            help="float32, float64, or bfloat16: fp32 weights under bf16 autocast, ours and "
            "torch.nn's alike."
        ),
    ] = DEFAULT_DTYPE,
    backend: Annotated[
        str | None,
        typer.Option(help="auto, composite or fused. Default: the current one (RNNKIT_BACKEND)."),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads. Default: torch's.")] = None,
    memory: Annotated[
        bool, typer.Option(help="Measure peak memory (a subprocess per implementation and case).")
    ] = DEFAULT_MEMORY,
    quick: Annotated[
        bool, typer.Option(help="The CI smoke run: one tiny shape, 2 repeats; no speed claims.")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write OUT.csv and OUT.json (a .csv/.json suffix is dropped)."),
    ] = None,
) -> None:
    """Forward and forward+backward time, GFLOP/s, speedup over torch.nn, fraction of the
    GEMM peak and peak memory per cell and shape, plus single-step streaming latency and
    variable-length batches against torch.nn's PackedSequence."""
    from rnnkit.cli.errors import boundary

    with boundary():
        _bench(cells, shapes, varlen, repeats, warmup, dtype, backend, threads, memory, quick, out)


def _bench(
    cells: str,
    shapes: str | None,
    varlen: str | None,
    repeats: int | None,
    warmup: int | None,
    dtype: str,
    backend: str | None,
    threads: int | None,
    memory: bool,
    quick: bool,
    out: Path | None,
) -> None:
    from rnnkit.nn import kernels
    from rnnkit.tools import bench as harness

    overrides: dict[str, object] = {
        "dtype": dtype,
        "backend": backend or kernels.get_backend(),
        "threads": threads,
        "memory": memory,
    }
    overrides["cells"] = harness.parse_cells(cells)
    if shapes is not None:
        overrides["shapes"] = harness.parse_shapes(shapes)
    if varlen is not None:
        overrides["varlen"] = harness.parse_varlen(varlen)
    if repeats is not None:
        overrides["repeats"] = repeats
    if warmup is not None:
        overrides["warmup"] = warmup
    if quick:
        config = harness.BenchConfig.quick(**overrides)
    else:
        config = dataclasses.replace(harness.BenchConfig(), **overrides)  # type: ignore[arg-type]

    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # a log or a pipe: keep every column whole
        console = Console(width=150)

    def save(result: Any) -> None:
        if out is not None:
            paths = harness.write_outputs(result, out)
            if result.complete:
                console.print("wrote " + ", ".join(str(p) for p in paths))

    try:
        harness.run(config, console, checkpoint=save)
    except ValueError as error:  # the backend supports none of the cells asked for
        raise ValueError(f"--backend {config.backend}: {error}") from None
