"""What bounds the fused kernels: each layer's GEMMs timed alone, against the layers.

    python -m rnnkit.tools.bench_bounds [--cells all] [--shapes S1,S2,S4] [--repeats 5]
                                        [--no-stream]

A fused layer's forward + backward is a fixed set of matrix products plus O(T*B*G)
element-wise gate math (G = gates * H). This runs exactly those products, at their
shapes, in the library the fused kernel chose for the layer's shape
(``rnnkit.nn.kernels.gemm.choose``: ``torch.mm`` into preallocated buffers for mkl and
aten; for onednn, oneDNN's ``mkldnn::_linear_pointwise`` on recurrent weights packed once
per call, for the projection and dx on the plain weight, and the weight gradients
``torch.mm``, as the kernel does), and nothing else:

    forward   x [T*B, D] @ W_ih^T [D, G]             one input projection
              h [B, H] @ W_hh^T [H, G]               T recurrent products (the reset-
                                                     before GRU: [H, 2H] then [H, H])
    backward  dgates [B, G] @ W_hh [G, H]            T recurrent products (likewise)
              dgates^T [G, T*B] @ h [T*B, H]         dW_hh, one product
              dgates^T [G, T*B] @ x [T*B, D]         dW_ih, one product
              dgates [T*B, G] @ W_ih [G, D]          dx, one product

The streaming table does the same for one step at B = 1 (``STREAM_SHAPE``): our layer
call, torch.nn's, and one product [1, D + H] @ [D + H, G] over both weight matrices, the
read of every weight that any step must do.

Their time, the GEMM floor, is what any implementation built on these products needs at
least, so ``baseline / floor`` is the largest speedup over the baseline such a kernel can
reach on this machine, and ``floor GFLOP/s / peak`` the largest fraction of the square
GEMM peak of that library (``gemm.peaks``). ``ours / floor`` is the fused kernel's
overhead over its own products (gate math, memory traffic, Python). Same alternating
medians as ``rnnkit bench``; per-step products in a Python loop add a few microseconds
each, so at long, tiny shapes (S3) the floor overstates the products' own time.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor

from rnnkit.nn import kernels
from rnnkit.nn.cells import CELLS, Cell
from rnnkit.nn.kernels import fused, gemm
from rnnkit.tools.bench import (
    SHAPES,
    STREAM_SHAPE,
    Shape,
    _layers,
    _training,
    gemm_flops,
    gemm_peak_gflops,
    parse_cells,
    parse_shapes,
    time_alternating,
)


def kernels_built() -> bool:
    """Whether the fused kernels load here (else every layer runs the composite path)."""
    return fused.load() is not None


def _recurrent_splits(cell: Cell, H: int) -> tuple[int, ...]:
    """Output widths of the recurrent products of one step: the reset-before GRU's
    candidate product waits for the reset gate, so it is a second product."""
    G = cell.num_gates * H
    return (2 * H, H) if cell.name == "gru_reset_before" else (G,)


def library_for(cell: Cell, shape: Shape, dtype: torch.dtype) -> str:
    """The library the fused kernel runs this layer's products in: the GEMM choice for fp32
    (``mkl``, ``onednn`` or ``aten``), ``mkl`` (dgemm) for fp64."""
    if dtype != torch.float32:
        return "mkl"
    return gemm.choose(shape.B, cell.num_gates * shape.H, shape.H)


def _onednn_products() -> tuple[Callable[..., Tensor], Callable[[Tensor, int], Tensor]]:
    """(a @ w^T with w [N, K] plain or packed, pack(w, rows)): oneDNN through ATen's ops."""
    linear, reorder = torch.ops.mkldnn._linear_pointwise, torch.ops.mkldnn._reorder_linear_weight

    def mm_t(a: Tensor, w: Tensor) -> Tensor:
        return linear(a, w, None, "none", [], "")

    return mm_t, reorder


def gemm_only(
    cell: Cell, shape: Shape, dtype: torch.dtype, library: str = "mkl"
) -> Callable[[], None]:
    """One forward + backward's matrix products at ``shape`` in ``library``, and nothing
    else."""
    T, B, D, H = shape.T, shape.B, shape.D, shape.H
    G = cell.num_gates * H
    g = torch.Generator().manual_seed(0)

    def rand(*size: int) -> Tensor:
        return torch.randn(*size, generator=g, dtype=dtype)

    x, w_ih, gx = rand(T * B, D), rand(G, D), rand(T * B, G)
    h_all, dgates = rand(T, B, H), rand(T, B, G)
    parts = [(rand(n, H), rand(B, n)) for n in _recurrent_splits(cell, H)]  # (W_hh rows, out)
    dh = rand(B, H)
    dw_hh, dw_ih, dx = rand(G, H), rand(G, D), rand(T * B, D)

    def run() -> None:
        torch.mm(x, w_ih.t(), out=gx)
        for t in range(T):
            for w, out in parts:
                torch.mm(h_all[t], w.t(), out=out)
        for t in range(T):
            start = 0
            for w, _ in parts:
                n = w.shape[0]
                torch.mm(dgates[t, :, start : start + n], w, out=dh)
                start += n
        flat = dgates.view(T * B, G)
        torch.mm(flat.t(), h_all.view(T * B, H), out=dw_hh)
        torch.mm(flat.t(), x, out=dw_ih)
        torch.mm(flat, w_ih, out=dx)

    def run_onednn() -> None:  # the kernel's onednn path: the weight gradients at::mm there too
        mm_t, pack = _onednn_products()
        mm_t(x, w_ih)  # [T*B, D] @ [D, G]
        forward = [pack(w, B) for w, _ in parts]  # [n, H], packed once per call
        backward = [pack(w.t().contiguous(), B) for w, _ in parts]  # [H, n]
        for t in range(T):
            for w in forward:
                mm_t(h_all[t], w)
        for t in range(T):
            start = 0
            for (w, _), wt in zip(parts, backward, strict=True):
                n = w.shape[0]
                mm_t(dgates[t, :, start : start + n], wt)
                start += n
        flat = dgates.view(T * B, G)
        torch.mm(flat.t(), h_all.view(T * B, H), out=dw_hh)
        torch.mm(flat.t(), x, out=dw_ih)
        mm_t(flat, w_ih.t().contiguous())  # dx [T*B, D]

    return run_onednn if library == "onednn" else run


@dataclass
class Bound:
    cell: str
    shape: str
    library: str
    """the GEMM library of the fused kernel's products, which the floor runs too"""
    baseline: str
    ours_ms: float
    baseline_ms: float
    floor_ms: float
    floor_gflops: float
    peak_gflops: float

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.ours_ms

    @property
    def ceiling(self) -> float:
        """The largest speedup over the baseline that the products alone allow."""
        return self.baseline_ms / self.floor_ms

    @property
    def overhead(self) -> float:
        return self.ours_ms / self.floor_ms


def measure(
    cell: Cell, shape: Shape, dtype: torch.dtype, repeats: int, peaks: dict[str, float]
) -> Bound:
    """Ours, the baseline and the floor at one shape; ``peaks``: GFLOP/s per library."""
    ours, base, base_backend, label = _layers(cell, shape.D, shape.H, dtype)
    library = library_for(cell, shape, dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape.T, shape.B, shape.D, generator=g, dtype=dtype, requires_grad=True)
    dout = torch.randn(shape.T, shape.B, shape.H, generator=g, dtype=dtype)
    fns = [
        _training(ours, "auto", x, dout),
        _training(base, base_backend, x, dout),
        gemm_only(cell, shape, dtype, library),
    ]
    (ours_ms, base_ms, floor_ms), _ = time_alternating(fns, repeats, warmup=2)
    flops = gemm_flops(cell, shape)[1]
    return Bound(
        cell.name,
        shape.name,
        library,
        label,
        ours_ms,
        base_ms,
        floor_ms,
        flops / floor_ms / 1e6,
        peaks.get(library, peaks["mkl"]),
    )


def stream_floor(cell: Cell, calls: int, repeats: int) -> tuple[str, float, float, float]:
    """(baseline label, ours, baseline, weights-read floor), microseconds per streaming step."""
    D, H = STREAM_SHAPE.D, STREAM_SHAPE.H
    ours, base, base_backend, label = _layers(cell, D, H, torch.float32)
    ours.eval()
    base.eval()
    x = torch.randn(1, 1, D)
    h0 = torch.zeros(1, 1, H)
    hx = (h0, h0.clone()) if cell.num_states == 2 else h0
    G = cell.num_gates * H
    both = torch.randn(G, D + H)
    xh, out = torch.randn(1, D + H), torch.empty(1, G)

    def block(call: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                for _ in range(calls):
                    call()

        return run

    def baseline() -> object:
        if base_backend is None:
            return base(x, hx)
        with kernels.use_backend(base_backend):
            return base(x, hx)

    fns = [
        block(lambda: ours(x, hx)),
        block(baseline),
        block(lambda: torch.mm(xh, both.t(), out=out)),
    ]
    (a, b, c), _ = time_alternating(fns, repeats, warmup=2)
    return label, 1e3 * a / calls, 1e3 * b / calls, 1e3 * c / calls


def table(bounds: list[Bound]) -> Table:
    t = Table(title="fp32 forward + backward: the GEMM floor (products alone) per layer")
    for col in (
        "cell",
        "shape",
        "gemm",
        "baseline",
        "ours ms",
        "baseline ms",
        "floor ms",
        "speedup",
        "ceiling",
        "ours / floor",
        "floor % peak",
    ):
        t.add_column(
            col, justify="left" if col in ("cell", "shape", "gemm", "baseline") else "right"
        )
    for b in bounds:
        t.add_row(
            b.cell,
            b.shape,
            b.library,
            b.baseline,
            f"{b.ours_ms:.2f}",
            f"{b.baseline_ms:.2f}",
            f"{b.floor_ms:.2f}",
            f"{b.speedup:.2f}x",
            f"{b.ceiling:.2f}x",
            f"{b.overhead:.2f}",
            f"{100 * b.floor_gflops / b.peak_gflops:.0f}",
        )
    return t


def main(argv: list[str] | None = None) -> list[Bound]:
    parser = argparse.ArgumentParser(
        prog="python -m rnnkit.tools.bench_bounds", description=__doc__
    )
    parser.add_argument("--cells", default="all", help="'all' or comma-separated cell names")
    parser.add_argument("--shapes", default="S1,S2,S4", help=f"names ({', '.join(SHAPES)})")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-size", type=int, default=2048)
    parser.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the streaming step against its weights-read floor",
    )
    parser.add_argument("--stream-calls", type=int, default=500)
    args = parser.parse_args(argv)
    cells, shapes = parse_cells(args.cells), parse_shapes(args.shapes)
    for name in cells:
        if name not in CELLS:
            parser.error(f"unknown cell {name!r}; expected some of {', '.join(CELLS)}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    console = Console()
    peaks = gemm.peaks(args.peak_size, args.repeats) if kernels_built() else {}
    peaks["mkl"] = peaks.get("mkl") or gemm_peak_gflops(args.peak_size, torch.float32, args.repeats)
    console.print(
        f"fp32 GEMM peaks ({args.peak_size}^3, {torch.get_num_threads()} threads, along the "
        "fused kernel's path), GFLOP/s: "
        + ", ".join(f"{name} {rate:.1f}" for name, rate in peaks.items())
    )
    bounds = [
        measure(CELLS[name], shape, torch.float32, args.repeats, peaks)
        for shape in shapes
        for name in cells
    ]
    console.print(table(bounds))
    if args.stream:
        t = Table(
            title=f"streaming step, B=1, D=H={STREAM_SHAPE.H}: µs per call (median of "
            f"{args.repeats} blocks of {args.stream_calls})"
        )
        for col in (
            "cell",
            "baseline",
            "ours",
            "baseline µs",
            "weights read (floor)",
            "ours - floor",
        ):
            t.add_column(col, justify="left" if col in ("cell", "baseline") else "right")
        for name in cells:
            label, ours, base, floor = stream_floor(CELLS[name], args.stream_calls, args.repeats)
            t.add_row(
                name, label, f"{ours:.1f}", f"{base:.1f}", f"{floor:.1f}", f"{ours - floor:.1f}"
            )
        console.print(t)
    return bounds


if __name__ == "__main__":
    main()
