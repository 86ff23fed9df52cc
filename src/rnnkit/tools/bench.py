"""``rnnkit bench``: rnnkit's layers against torch.nn on this machine, in one run.

``docs/benchmarks.md`` shows how to read the output. The harness times whatever the layers
dispatch to (``rnnkit.nn.kernels.select`` under the chosen backend); every row says which
``run_layer`` it ran.

Per cell and shape (T time, B batch, D input, H hidden; one layer, one direction,
time-major input [T, B, D]):

fwd      one layer call under ``torch.no_grad()``, modules in eval mode (inference).
train    forward, then backward of the output against a fixed random gradient. The input
         requires grad, so the backward computes dx as well as the weight gradients.
GFLOP/s  GEMM FLOPs (``gemm_flops``) over the median time.
speedup  baseline time / our time (above 1: we are faster). Baseline: torch.nn's same
         cell with the same weights; for the reset-before GRU, which torch.nn lacks,
         rnnkit's composite path.
% peak   train GFLOP/s over the GEMM peak: the median rate of a square ``torch.mm``
         [N, N] @ [N, N] in the same dtype and thread count, measured early in the run.
memory   peak resident memory one call adds (``MEMORY_METHOD``), in a fresh subprocess
         per implementation, after a tiny warm-up call (so one-time costs such as thread
         pools or kernel compilation are left out).
stream   one call at T=1, B=1, D=H=256 with the state carried over from the previous
         call, microseconds per call, inference.
varlen   a padded batch (B=64, D=256, H=512) with lengths uniform in [T/10, T], ours with
         ``lengths=`` against the baseline on the same batch as a PackedSequence (packing
         included) and against ours on the same tokens as a full batch: B' = round(sum of
         lengths / T) sequences of length T.

Times are medians of ``repeats`` timed calls after ``warmup`` untimed ones. Ours and the
baseline alternate call by call, so the noise of a shared machine falls on both alike.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from rnnkit.common.io import atomic_write_text
from rnnkit.nn import kernels, runner
from rnnkit.nn.cells import CELLS, Cell
from rnnkit.nn.kernels import gemm, precision
from rnnkit.nn.layers import RNNBase
from rnnkit.train.config import THREADS_PER_CORE


@dataclass(frozen=True)
class Shape:
    name: str
    T: int
    B: int
    D: int
    H: int


SHAPES = {
    s.name: s
    for s in (
        Shape("S1", 100, 32, 128, 256),
        Shape("S2", 100, 64, 256, 512),
        Shape("S3", 200, 1, 64, 128),
        Shape("S4", 50, 128, 512, 1024),
    )
}
QUICK_SHAPE = Shape("tiny", 8, 2, 16, 32)
STREAM_SHAPE = Shape("stream", 1, 1, 256, 256)
VARLEN_SHAPE = Shape("varlen", 0, 64, 256, 512)  # T from BenchConfig.varlen
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.float32}
"""The parameters' and inputs' dtype per ``--dtype``; "bfloat16" is fp32 weights and inputs
with every layer call (ours and torch.nn's alike) under ``torch.autocast(bfloat16)``, the
way a user asks for bf16 on a CPU; the backward runs outside autocast, as torch advises."""
AUTOCAST = {"bfloat16": torch.bfloat16}
_autocast: dict[str, torch.dtype | None] = {"dtype": None}  # set by run() and memory_probe
_TORCH_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "RNN_TANH": lambda D, H, dtype: nn.RNN(D, H, nonlinearity="tanh", dtype=dtype),
    "RNN_RELU": lambda D, H, dtype: nn.RNN(D, H, nonlinearity="relu", dtype=dtype),
    "GRU": lambda D, H, dtype: nn.GRU(D, H, dtype=dtype),
    "LSTM": lambda D, H, dtype: nn.LSTM(D, H, dtype=dtype),
}


@dataclass(frozen=True)
class BenchConfig:
    """What to measure; the CLI overrides these defaults, ``quick()`` is the CI smoke run."""

    cells: tuple[str, ...] = tuple(n for n, c in CELLS.items() if c.standard)
    """the cells with a fused kernel (the others run the composite path under "auto" on the
    CPU, so there is nothing to compare them with); name others to time them."""
    shapes: tuple[Shape, ...] = tuple(SHAPES.values())
    repeats: int = 5
    warmup: int = 1
    dtype: str = "float32"
    backend: str = "auto"
    threads: int | None = None
    """torch intra-op threads; None keeps torch's current setting."""
    memory: bool = True
    stream_calls: int = 200
    """calls per timed block of the streaming test (a block's mean is one sample)."""
    peak_size: int = 2048
    """N of the N x N x N GEMM that measures the peak."""
    varlen: tuple[int, ...] = (100, 400)
    """T of each variable-length case (none: skip them)."""
    varlen_shape: Shape = VARLEN_SHAPE

    def __post_init__(self) -> None:
        for name in self.cells:
            if name not in CELLS:
                raise ValueError(f"unknown cell {name!r}; expected some of {', '.join(CELLS)}")
        if not self.cells or not self.shapes:
            raise ValueError("need at least one cell and one shape")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.backend not in kernels.BACKENDS:
            raise ValueError(f"backend must be one of {kernels.BACKENDS}, got {self.backend!r}")
        for name in ("repeats", "stream_calls", "peak_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be at least 0, got {self.warmup}")
        if any(t < 1 for t in self.varlen):
            raise ValueError(f"varlen lengths must be at least 1, got {self.varlen}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        cores = os.cpu_count() or 1
        if self.threads is not None and self.threads > THREADS_PER_CORE * cores:
            raise ValueError(
                f"threads must be at most {THREADS_PER_CORE * cores} "
                f"({THREADS_PER_CORE} per core, {cores} cores), got {self.threads}"
            )

    @classmethod
    def quick(cls, **overrides: object) -> BenchConfig:
        """One tiny shape, 2 repeats: checks that the harness runs, says nothing on speed."""
        base = cls(
            shapes=(QUICK_SHAPE,),
            repeats=2,
            warmup=1,
            stream_calls=5,
            peak_size=256,
            varlen=(QUICK_SHAPE.T,),
            varlen_shape=QUICK_SHAPE,
        )
        return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def parse_cells(text: str) -> tuple[str, ...]:
    """'all' (the cells with a fused kernel, ``BenchConfig.cells``) or comma-separated cell
    names."""
    if text.strip() == "all":
        return BenchConfig.cells
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_shapes(text: str) -> tuple[Shape, ...]:
    """'all', comma-separated names (S1..S4), 'T,B,D,H' for one custom shape, or TxBxDxH."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if text.strip() == "all":
        return tuple(SHAPES.values())
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        parts = ["x".join(parts)]
    shapes = []
    for part in parts:
        if part in SHAPES:
            shapes.append(SHAPES[part])
            continue
        dims = part.split("x")
        if len(dims) != 4 or not all(d.isdigit() and int(d) > 0 for d in dims):
            raise ValueError(
                f"shape {part!r} is neither one of {', '.join(SHAPES)} nor 'T,B,D,H' / "
                "TxBxDxH with positive integers"
            )
        T, B, D, H = (int(d) for d in dims)
        shapes.append(Shape(part, T, B, D, H))
    return tuple(shapes)


def parse_varlen(text: str) -> tuple[int, ...]:
    """'100,400' -> (100, 400); 'none' -> ()."""
    if text.strip().lower() == "none":
        return ()
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(
            f"--varlen must be comma-separated integers or 'none', got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise ValueError(f"--varlen lengths must be at least 1, got {text!r}")
    return values


def gemm_flops(cell: Cell, shape: Shape) -> tuple[int, int]:
    """(forward, forward + backward) GEMM FLOPs of one layer-direction, G = gates * H.

    Forward: the input projection [T*B, D] @ [D, G] and T recurrent products
    [B, H] @ [H, G]: 2*T*B*G*(D + H). Backward: each of those GEMMs has two of the same
    size, one for the gradient of its input (dx, dh) and one for its weight (dW_ih,
    dW_hh): 2x the forward, so forward + backward is 3x. Element-wise gate math (O(T*B*G))
    is not counted; the reset-before GRU's two dependent recurrent GEMMs have the same
    total as one. A cell without recurrent weights (minGRU, minLSTM) has the input
    projection only.
    """
    G = cell.num_gates * shape.H
    forward = 2 * shape.T * shape.B * G * (shape.D + (shape.H if cell.recurrent else 0))
    return forward, 3 * forward


@dataclass
class Row:
    """One cell at one shape: ours and the baseline, measured in the same run."""

    cell: str
    shape: str
    T: int
    B: int
    D: int
    H: int
    dtype: str
    threads: int
    backend: str
    """the backend requested; ``ran_*`` is the ``run_layer`` it picked."""
    ran_fwd: str
    ran_train: str | None
    baseline: str
    fwd_ms: float
    base_fwd_ms: float | None
    """None (n/a) where the baseline cannot run here (``_baseline_runs``), as every base
    figure and ratio then."""
    fwd_speedup: float | None
    fwd_gflops: float
    first_fwd_ms: float
    train_ms: float | None = None
    base_train_ms: float | None = None
    train_speedup: float | None = None
    train_gflops: float | None = None
    base_train_gflops: float | None = None
    train_peak_fraction: float | None = None
    first_train_ms: float | None = None
    mem_fwd_mib: float | None = None
    mem_train_mib: float | None = None
    base_mem_fwd_mib: float | None = None
    base_mem_train_mib: float | None = None
    repeats: int = 0
    gemm: str | None = None
    """the library of the fused kernel's fp32 products at this shape (``gemm.choose``);
    None where none ran (composite, fp64, bf16 autocast, the streaming step's own
    matrix-vector products)."""


@dataclass
class VarlenRow:
    """One cell on one variable-length batch: ours with ``lengths=``, the baseline on the
    PackedSequence, and ours on the same tokens as a full batch, in the same run."""

    cell: str
    T: int
    B: int
    D: int
    H: int
    tokens: int
    full_B: int
    dtype: str
    threads: int
    baseline: str
    fwd_ms: float
    packed_fwd_ms: float | None
    """None (n/a) where the baseline cannot run here, as both ratios against it then."""
    full_fwd_ms: float
    train_ms: float
    packed_train_ms: float | None
    full_train_ms: float
    train_vs_packed: float | None
    """the baseline's packed time / ours (target: at least 3)"""
    train_vs_full: float
    """ours / ours on the same tokens as a full batch (target: at most 1.15)"""
    fwd_vs_packed: float | None
    fwd_vs_full: float
    repeats: int


@dataclass
class BenchResult:
    config: dict
    machine: dict
    gemm_peak_gflops: float
    memory_method: str
    rows: list[Row]
    varlen: list[VarlenRow] = dataclasses.field(default_factory=list)
    gemm_peak_gflops_at_end: float | None = None
    compile_report: object = None
    gemm_choices: dict | None = None
    """``rnnkit.nn.kernels.gemm.chosen()`` at the end: the library per shape bucket"""
    complete: bool = False


# -- timing ----------------------------------------------------------------------------


def _timed_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def time_alternating(
    fns: Sequence[Callable[[], object]], repeats: int, warmup: int
) -> tuple[list[float], list[float]]:
    """-> (median ms of each fn, ms of its first call); the fns take turns every round."""
    first = [_timed_ms(fn) for fn in fns]
    for _ in range(warmup - 1):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns] if warmup else [[ms] for ms in first]
    for _ in range(repeats - (0 if warmup else 1)):
        for fn, s in zip(fns, samples, strict=True):
            s.append(_timed_ms(fn))
    return [statistics.median(s) for s in samples], first


def _time_with_baseline(
    fns: Sequence[Callable[[], object]], baseline: int, runs: bool, repeats: int, warmup: int
) -> tuple[list[float | None], list[float | None]]:
    """``time_alternating``, but where the baseline cannot run here (``runs`` False), the
    fns other than ``fns[baseline]`` alone, and None in the baseline's place."""
    if runs:
        medians, first = time_alternating(fns, repeats, warmup)
        return list(medians), list(first)
    others = [fn for k, fn in enumerate(fns) if k != baseline]
    medians, first = time_alternating(others, repeats, warmup)
    return (
        [*medians[:baseline], None, *medians[baseline:]],
        [*first[:baseline], None, *first[baseline:]],
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def gemm_peak_gflops(n: int, dtype: torch.dtype, repeats: int) -> float:
    """Median GFLOP/s of [n, n] @ [n, n] with torch.mm in ``dtype``: the peak a layer in
    that precision can approach (on CPU, fp32 is MKL's or OpenBLAS's GEMM as torch was
    built, bf16 is oneDNN's). On a CPU without bf16 instructions the bf16 rate is that of
    the emulated product rnnkit runs there (``precision.to_bf16``: fp32 on rounded values),
    not torch's bf16 matmul, far slower there (docs/kernels.md)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    if dtype == torch.bfloat16:
        a, b = precision.to_bf16(a), precision.to_bf16(b)
    out = torch.empty(n, n, dtype=a.dtype)
    (ms,), _ = time_alternating([lambda: torch.mm(a, b, out=out)], max(repeats, 5), 2)
    return 2 * n**3 / ms / 1e6


def library_peaks(n: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of each fp32 GEMM library the fused kernel can use, on n^3 products
    (``gemm.peaks``); empty where the kernel did not build."""
    try:
        return gemm.peaks(n, max(repeats, 3))
    except RuntimeError:
        return {}


def row_gemm(cell: Cell, shape: Shape, ran: str, dtype: str) -> str | None:
    """The library the fused kernel's fp32 products use at this shape, or None."""
    if not ran.startswith("fused") or dtype != "float32":
        return None
    return gemm.choose(shape.B, cell.num_gates * shape.H, shape.H)


# -- the implementations ---------------------------------------------------------------


def _layers(cell: Cell, D: int, H: int, dtype: torch.dtype):
    """-> (ours, baseline module, baseline backend or None for torch.nn, baseline label)."""
    torch.manual_seed(0)
    ours = RNNBase(cell, D, H, dtype=dtype)
    if cell.torch_mode is None:
        return ours, ours, "composite", "rnnkit composite"
    theirs = _TORCH_LAYERS[cell.torch_mode](D, H, dtype)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs, None, f"torch.nn.{type(theirs).__name__}"


def _call(module: nn.Module, backend: str | None, x, hx=None, **kwargs):
    amp = _autocast["dtype"]
    with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
        if backend is None:
            return module(x, hx, **kwargs)
        with kernels.use_backend(backend):
            return module(x, hx, **kwargs)


def _baseline_runs(base: nn.Module, backend: str | None, D: int, dtype: torch.dtype) -> bool:
    """Whether the baseline runs here at all, tried on a T=2, B=1 input: torch.nn.LSTM
    does not under bf16 autocast on a CPU without bf16 instructions (oneDNN creates no LSTM
    primitive there). Its figures are then None (n/a)."""
    try:
        with torch.no_grad():
            _call(base, backend, torch.zeros(2, 1, D, dtype=dtype))
    except RuntimeError:
        return False
    return True


def _inference(module: nn.Module, backend: str | None, x: Tensor) -> Callable[[], object]:
    def run() -> None:
        module.eval()
        with torch.no_grad():
            _call(module, backend, x)

    return run


def _training(
    module: nn.Module, backend: str | None, x: Tensor, dout: Tensor
) -> Callable[[], object]:
    def run() -> None:
        module.train()
        module.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = _call(module, backend, x)
        out.backward(dout.to(out.dtype))  # under autocast the output may be bf16

    return run


def _streaming(
    module: nn.Module, backend: str | None, x: Tensor, calls: int
) -> Callable[[], object]:
    state = None

    def run() -> None:
        nonlocal state
        module.eval()
        with torch.no_grad():
            for _ in range(calls):
                _, state = _call(module, backend, x, state)

    return run


def dispatched(cell: Cell, x: Tensor, backend: str) -> str:
    """The name of the ``run_layer`` that a layer call on ``x`` picks under ``backend``.

    Call it in the grad mode of the call it describes: a kernel may support inference only.
    """
    with kernels.use_backend(backend):
        run_layer = kernels.select(cell, x)
    if run_layer is runner.run_layer:
        return "composite"
    for kernel in kernels._kernels:
        if kernel.run_layer is run_layer:
            return kernel.name
    return getattr(run_layer, "__qualname__", repr(run_layer))


# -- peak memory, one fresh process per implementation ----------------------------------

MEMORY_METHOD = (
    "peak RSS a call adds: the kernel's high-water mark (VmHWM) after the call minus the RSS "
    "before it, the mark reset to the current RSS just before (/proc/self/clear_refs, "
    "Linux); in a fresh subprocess per implementation and case, after a T=2, B=1 warm-up"
)
_PROBE = "import sys; from rnnkit.tools.bench import memory_probe; memory_probe(sys.argv[1])"


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise OSError(f"no {field} in /proc/self/status")


def _peak_rss_added_mib(call: Callable[[], object]) -> float | None:
    """Peak RSS above the RSS before ``call``; None where the mark cannot be reset.

    ``ru_maxrss`` alone does not do: the import of torch peaks above what a small case
    adds later, so the case would read 0. Writing 5 to clear_refs resets the mark.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_mib("VmRSS")
    except OSError:
        return None
    call()
    return _status_mib("VmHWM") - before


def memory_probe(spec_json: str) -> None:
    """In a subprocess: print {"fwd": MiB, "train": MiB} of peak RSS one call adds."""
    spec = json.loads(spec_json)
    torch.set_num_threads(spec["threads"])
    dtype = DTYPES[spec["dtype"]]
    _autocast["dtype"] = AUTOCAST.get(spec["dtype"])
    ours, base, base_backend, _ = _layers(CELLS[spec["cell"]], spec["D"], spec["H"], dtype)
    module, backend = (ours, spec["backend"]) if spec["impl"] == "ours" else (base, base_backend)
    x = torch.randn(spec["T"], spec["B"], spec["D"], dtype=dtype, requires_grad=True)
    dout = torch.randn(spec["T"], spec["B"], spec["H"], dtype=dtype)
    tiny = x[:2, :1].detach().requires_grad_()
    _inference(module, backend, tiny.detach())()
    _training(module, backend, tiny, dout[:2, :1])()
    fwd = _peak_rss_added_mib(_inference(module, backend, x.detach()))
    train = _peak_rss_added_mib(_training(module, backend, x, dout))
    print(json.dumps({"fwd": fwd, "train": train}))


def _measure_memory(cell: Cell, shape: Shape, cfg: BenchConfig, threads: int, impl: str):
    spec = dataclasses.asdict(shape) | {
        "cell": cell.name,
        "dtype": cfg.dtype,
        "backend": cfg.backend,
        "threads": threads,
        "impl": impl,
    }
    package_root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": path},
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"memory probe for {cell.name} {shape.name} ({impl}) failed:\n{proc.stderr[-2000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the cases -------------------------------------------------------------------------


def bench_case(cell: Cell, shape: Shape, cfg: BenchConfig, threads: int, peak: float) -> Row:
    """Ours against the baseline at one shape, inference and training."""
    dtype = DTYPES[cfg.dtype]
    ours, base, base_backend, label = _layers(cell, shape.D, shape.H, dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape.T, shape.B, shape.D, generator=g, dtype=dtype, requires_grad=True)
    dout = torch.randn(shape.T, shape.B, shape.H, generator=g, dtype=dtype)
    x_inf = x.detach()
    with torch.no_grad():
        ran_fwd = dispatched(cell, x_inf, cfg.backend)
    ran_train = dispatched(cell, x, cfg.backend)
    fwd_flops, train_flops = gemm_flops(cell, shape)
    runs = _baseline_runs(base, base_backend, shape.D, dtype)

    fwd = [_inference(ours, cfg.backend, x_inf), _inference(base, base_backend, x_inf)]
    (fwd_ms, base_fwd_ms), (first_fwd, _) = _time_with_baseline(
        fwd, 1, runs, cfg.repeats, cfg.warmup
    )
    train = [_training(ours, cfg.backend, x, dout), _training(base, base_backend, x, dout)]
    (train_ms, base_train_ms), (first_train, _) = _time_with_baseline(
        train, 1, runs, cfg.repeats, cfg.warmup
    )
    assert fwd_ms is not None and first_fwd is not None and train_ms is not None
    row = Row(
        cell.name,
        shape.name,
        shape.T,
        shape.B,
        shape.D,
        shape.H,
        cfg.dtype,
        threads,
        cfg.backend,
        ran_fwd,
        ran_train,
        label,
        fwd_ms=fwd_ms,
        base_fwd_ms=base_fwd_ms,
        fwd_speedup=_ratio(base_fwd_ms, fwd_ms),
        fwd_gflops=fwd_flops / fwd_ms / 1e6,
        first_fwd_ms=first_fwd,
        train_ms=train_ms,
        base_train_ms=base_train_ms,
        train_speedup=_ratio(base_train_ms, train_ms),
        train_gflops=train_flops / train_ms / 1e6,
        base_train_gflops=_ratio(train_flops / 1e6, base_train_ms),
        train_peak_fraction=train_flops / train_ms / 1e6 / peak,
        first_train_ms=first_train,
        repeats=cfg.repeats,
        gemm=row_gemm(cell, shape, ran_train, cfg.dtype),
    )
    if cfg.memory:
        mine = _measure_memory(cell, shape, cfg, threads, "ours")
        theirs = _measure_memory(cell, shape, cfg, threads, "base")
        row.mem_fwd_mib, row.mem_train_mib = mine["fwd"], mine["train"]
        row.base_mem_fwd_mib, row.base_mem_train_mib = theirs["fwd"], theirs["train"]
    return row


def bench_stream(cell: Cell, cfg: BenchConfig, threads: int) -> Row:
    """One step at a time with carried state, B=1: the latency of online inference."""
    dtype, shape = DTYPES[cfg.dtype], STREAM_SHAPE
    ours, base, base_backend, label = _layers(cell, shape.D, shape.H, dtype)
    x = torch.randn(1, 1, shape.D, dtype=dtype)
    with torch.no_grad():
        ran = dispatched(cell, x, cfg.backend)
    fns = [
        _streaming(ours, cfg.backend, x, cfg.stream_calls),
        _streaming(base, base_backend, x, cfg.stream_calls),
    ]
    runs = _baseline_runs(base, base_backend, shape.D, dtype)
    (ms, base_ms), (first, _) = _time_with_baseline(fns, 1, runs, cfg.repeats, cfg.warmup)
    assert ms is not None and first is not None
    per_call, base_per_call = ms / cfg.stream_calls, _ratio(base_ms, cfg.stream_calls)
    fwd_flops, _ = gemm_flops(cell, shape)
    return Row(
        cell.name,
        shape.name,
        shape.T,
        shape.B,
        shape.D,
        shape.H,
        cfg.dtype,
        threads,
        cfg.backend,
        ran,
        None,
        label,
        fwd_ms=per_call,
        base_fwd_ms=base_per_call,
        fwd_speedup=_ratio(base_per_call, per_call),
        fwd_gflops=fwd_flops / per_call / 1e6,
        first_fwd_ms=first / cfg.stream_calls,
        repeats=cfg.repeats,
    )


def _varlen_calls(
    module: nn.Module, backend: str | None, x: Tensor, lengths: Tensor | None, packed: bool
):
    """-> (inference, training) calls of ``module`` on x [T, B, D]: with ``lengths=``, or
    on a PackedSequence (the packing timed too) if ``packed``, or full if lengths is None."""

    def call() -> Tensor:
        if lengths is None:
            return _call(module, backend, x)[0]
        if packed:
            seq = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            return _call(module, backend, seq)[0].data
        return _call(module, backend, x, lengths=lengths)[0]

    def inference() -> None:
        module.eval()
        with torch.no_grad():
            call()

    def training() -> None:
        module.train()
        module.zero_grad(set_to_none=True)
        x.grad = None
        out = call()
        out.backward(torch.ones_like(out))

    return inference, training


def bench_varlen(cell: Cell, T: int, cfg: BenchConfig, threads: int) -> VarlenRow:
    """Variable lengths at T: do they cost only their tokens?"""
    dtype, shape = DTYPES[cfg.dtype], cfg.varlen_shape
    ours, base, base_backend, label = _layers(cell, shape.D, shape.H, dtype)
    g = torch.Generator().manual_seed(2)
    lengths = torch.randint(max(1, T // 10), T + 1, (shape.B,), generator=g)
    tokens = int(lengths.sum())
    full_B = max(1, round(tokens / T))
    x = torch.randn(T, shape.B, shape.D, generator=g, dtype=dtype, requires_grad=True)
    x_full = torch.randn(T, full_B, shape.D, generator=g, dtype=dtype, requires_grad=True)
    mine = _varlen_calls(ours, cfg.backend, x, lengths, packed=False)
    packed = _varlen_calls(base, base_backend, x, lengths, packed=True)
    full = _varlen_calls(ours, cfg.backend, x_full, None, packed=False)
    runs = _baseline_runs(base, base_backend, shape.D, dtype)
    (fwd, packed_fwd, full_fwd), _ = _time_with_baseline(
        [mine[0], packed[0], full[0]], 1, runs, cfg.repeats, cfg.warmup
    )
    (train, packed_train, full_train), _ = _time_with_baseline(
        [mine[1], packed[1], full[1]], 1, runs, cfg.repeats, cfg.warmup
    )
    assert fwd is not None and full_fwd is not None
    assert train is not None and full_train is not None
    return VarlenRow(
        cell.name,
        T,
        shape.B,
        shape.D,
        shape.H,
        tokens,
        full_B,
        cfg.dtype,
        threads,
        label + " packed",
        fwd,
        packed_fwd,
        full_fwd,
        train,
        packed_train,
        full_train,
        train_vs_packed=_ratio(packed_train, train),
        train_vs_full=train / full_train,
        fwd_vs_packed=_ratio(packed_fwd, fwd),
        fwd_vs_full=fwd / full_fwd,
        repeats=cfg.repeats,
    )


_REPORT_NAMES = ("compile_report", "compile_info")


def compile_report(rows: Sequence[Row]) -> object:
    """The fused kernels' first-use compile cost, if they report one; None if not.

    Looked up defensively, since the kernels evolve apart from this harness: a function
    named in ``_REPORT_NAMES`` on ``rnnkit.nn.kernels`` or on the module of a registered
    kernel's ``run_layer``. Asked only when some row ran a fused kernel: a report may
    trigger the compilation it reports on.
    """
    if all(r.ran_fwd == "composite" and r.ran_train in ("composite", None) for r in rows):
        return None
    modules = [kernels, *(sys.modules.get(k.run_layer.__module__) for k in kernels._kernels)]
    for module in modules:
        for name in _REPORT_NAMES:
            report = getattr(module, name, None)
            if callable(report):
                try:
                    value = report()
                except Exception as error:  # a broken report must not cost a finished run
                    return f"{name}() failed: {error!r}"
                return json.loads(json.dumps(value, default=str))
    return None


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": threads,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "bf16_native": precision.bf16_native(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _peak_dtype(name: str) -> torch.dtype:
    """The dtype of the products a ``--dtype`` run does: bf16 under autocast."""
    return AUTOCAST.get(name, DTYPES[name])


def run(
    cfg: BenchConfig,
    console: Console | None = None,
    checkpoint: Callable[[BenchResult], object] | None = None,
) -> BenchResult:
    """Measure every cell and shape of ``cfg``, printing a table per cell as it completes.

    ``checkpoint`` gets the partial result (``complete`` False) after each cell, so that
    a long run that is cut short still leaves its finished cells on disk.
    """
    for name in cfg.cells:  # fail now, not after minutes of measuring
        try:
            dispatched(CELLS[name], torch.zeros(1, 1, 1, dtype=DTYPES[cfg.dtype]), cfg.backend)
        except RuntimeError as error:
            raise ValueError(str(error)) from error
    previous_threads = torch.get_num_threads()
    threads = cfg.threads or previous_threads
    torch.set_num_threads(threads)
    _autocast["dtype"] = AUTOCAST.get(cfg.dtype)
    try:
        machine = machine_info(threads)
        peak = gemm_peak_gflops(cfg.peak_size, _peak_dtype(cfg.dtype), cfg.repeats)
        machine["gemm_peaks_gflops"] = {
            name: peak if name == cfg.dtype else gemm_peak_gflops(cfg.peak_size, dt, cfg.repeats)
            for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16))
        }
        machine["gemm_library_peaks_gflops"] = library_peaks(cfg.peak_size, cfg.repeats)
        if console:
            others = ", ".join(
                f"{name} {rate:.1f}" for name, rate in machine["gemm_peaks_gflops"].items()
            )
            libraries = ", ".join(
                f"{name} {rate:.1f}" for name, rate in machine["gemm_library_peaks_gflops"].items()
            )
            console.print(
                f"{machine['cpu']}, torch {machine['torch']}, {threads} threads, {cfg.dtype}"
                + (" (fp32 weights under bf16 autocast)" if cfg.dtype in AUTOCAST else "")
                + f"; GEMM peak {peak:.1f} GFLOP/s (torch.mm {cfg.peak_size}^3, median; "
                f"{others}); backend {cfg.backend!r}; load average "
                f"{machine['load_average_at_start']}"
            )
            console.print(
                f"fp32 GEMM libraries of the fused kernel, GFLOP/s at {cfg.peak_size}^3 "
                f"(median): {libraries or 'n/a'}; chosen per shape: see the 'ran' column"
            )
            if not machine["bf16_native"]:
                console.print(
                    "This CPU has no bf16 instructions: rnnkit's bf16 products run as fp32 "
                    "products of bf16-rounded operands (and the bf16 peak above is theirs); "
                    "torch.nn's under autocast run torch's bf16 matmul, and its LSTM does not "
                    "run (n/a)."
                )
        result = BenchResult(
            config=dataclasses.asdict(cfg),
            machine=machine,
            gemm_peak_gflops=peak,
            memory_method=MEMORY_METHOD if cfg.memory else "not measured (--no-memory)",
            rows=[],
        )
        stream = [bench_stream(CELLS[name], cfg, threads) for name in cfg.cells]
        result.rows.extend(stream)
        if console:
            console.print(_stream_table(stream, cfg.stream_calls))
        for name in cfg.cells:
            cell_rows = [bench_case(CELLS[name], s, cfg, threads, peak) for s in cfg.shapes]
            result.rows.extend(cell_rows)
            if console:
                console.print(_cell_table(cell_rows, peak))
            if checkpoint:
                checkpoint(result)
        for name in cfg.cells:
            varlen = [bench_varlen(CELLS[name], T, cfg, threads) for T in cfg.varlen]
            result.varlen.extend(varlen)
            if console and varlen:
                console.print(_varlen_table(varlen))
            if checkpoint:
                checkpoint(result)
        # The same GEMM again: how far the machine's speed drifted during the run.
        result.gemm_peak_gflops_at_end = gemm_peak_gflops(
            cfg.peak_size, _peak_dtype(cfg.dtype), cfg.repeats
        )
        if hasattr(os, "getloadavg"):
            machine["load_average_at_end"] = os.getloadavg()
        result.compile_report = compile_report(result.rows)
        result.gemm_choices = gemm.chosen()
        result.complete = True
        if console:
            report = result.compile_report
            shown = "n/a (no fused kernel ran, or none reports it)" if report is None else report
            console.print(
                f"GEMM peak at the end: {result.gemm_peak_gflops_at_end:.1f} GFLOP/s; "
                f"fused kernels' first-use compile cost: {shown}"
            )
            choices = gemm.chosen()
            buckets = ", ".join(f"{k} {v}" for k, v in choices["buckets"].items()) or "none"
            forced = f"forced by RNNKIT_GEMM={choices['override']}; " if choices["override"] else ""
            console.print(
                f"fp32 GEMM library per shape bucket (BxGxH@threads): {forced}{buckets} "
                f"(cache {choices['cache']})"
            )
        if checkpoint:
            checkpoint(result)
        return result
    finally:
        torch.set_num_threads(previous_threads)
        _autocast["dtype"] = None


# -- output ----------------------------------------------------------------------------


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def _cell_table(rows: list[Row], peak: float) -> Table:
    first = rows[0]
    table = Table(
        title=f"{first.cell} vs {first.baseline} ({first.dtype}, {first.threads} threads, "
        f"median of {first.repeats}); x = {first.baseline} time / ours; "
        f"% peak of {peak:.1f} GFLOP/s; MiB = peak RSS added by train, ours/base"
    )
    for column in ("shape", "T,B,D,H", "ran"):
        table.add_column(column)
    for column in ("fwd ms", "fwd x", "train ms", "train x", "GFLOP/s", "% peak", "MiB"):
        table.add_column(column, justify="right")
    for r in rows:
        ran = r.ran_fwd if r.ran_fwd == r.ran_train else f"{r.ran_fwd}/{r.ran_train}"
        ran += f" ({r.gemm})" if r.gemm else ""
        percent = None if r.train_peak_fraction is None else 100 * r.train_peak_fraction
        table.add_row(
            r.shape,
            f"{r.T},{r.B},{r.D},{r.H}",
            ran,
            _fmt(r.fwd_ms, ".2f"),
            _fmt(r.fwd_speedup, ".2f"),
            _fmt(r.train_ms, ".2f"),
            _fmt(r.train_speedup, ".2f"),
            _fmt(r.train_gflops, ".1f"),
            _fmt(percent, ".0f"),
            "n/a"
            if r.mem_train_mib is None
            else f"{r.mem_train_mib:.0f}/{_fmt(r.base_mem_train_mib, '.0f')}",
        )
    return table


def _stream_table(rows: list[Row], calls: int) -> Table:
    first = rows[0]
    table = Table(
        title=f"streaming: one step, B=1, D=H={first.H}, state carried "
        f"({first.dtype}, {first.threads} threads, median of {first.repeats} blocks of "
        f"{calls} calls); x = base time / ours"
    )
    for column in ("cell", "ran", "baseline"):
        table.add_column(column)
    for column in ("ours µs/call", "base µs/call", "x"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r.cell,
            r.ran_fwd + (f" ({r.gemm})" if r.gemm else ""),
            r.baseline,
            f"{r.fwd_ms * 1e3:.1f}",
            _fmt(None if r.base_fwd_ms is None else r.base_fwd_ms * 1e3, ".1f"),
            _fmt(r.fwd_speedup, ".2f"),
        )
    return table


def _varlen_table(rows: list[VarlenRow]) -> Table:
    first = rows[0]
    table = Table(
        title=f"{first.cell}, variable lengths uniform in [T/10, T], B={first.B}, "
        f"D={first.D}, H={first.H} ({first.dtype}, {first.threads} threads, median of "
        f"{first.repeats}); vs packed = {first.baseline} time / ours; vs full = ours / ours "
        "on the same tokens as a full batch of B' sequences"
    )
    for column in ("T", "tokens", "B'", "fwd ms", "fwd vs packed", "fwd vs full"):
        table.add_column(column, justify="right")
    for column in ("train ms", "train vs packed", "train vs full"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r.T),
            str(r.tokens),
            str(r.full_B),
            f"{r.fwd_ms:.2f}",
            _fmt(r.fwd_vs_packed, ".2f"),
            f"{r.fwd_vs_full:.2f}",
            f"{r.train_ms:.2f}",
            _fmt(r.train_vs_packed, ".2f"),
            f"{r.train_vs_full:.2f}",
        )
    return table


def write_outputs(result: BenchResult, out: Path) -> tuple[Path, Path]:
    """``out`` with .csv (one line per row) and .json (rows, machine, config); -> paths."""
    base = out.with_suffix("") if out.suffix in (".csv", ".json") else out
    csv_path, json_path = (base.with_name(base.name + ext) for ext in (".csv", ".json"))
    rows = [dataclasses.asdict(r) for r in result.rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in dataclasses.fields(Row)])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(csv_path, buffer.getvalue())
    atomic_write_text(json_path, json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    return csv_path, json_path
