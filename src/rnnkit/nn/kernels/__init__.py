"""Choosing an implementation of ``run_layer`` for each call.

Backends:
    "composite"  ``rnnkit.nn.runner.run_layer``: the cell's step under autograd, any device.
    "fused"      a kernel registered with ``register``, for the inputs it supports.
    "auto"       fused where a registered kernel supports the inputs (and, if it says
                 where, prefers them: ``Kernel.auto``), else composite.

The built-in fused kernel, ``rnnkit.nn.kernels.fused`` ("fused_cpu": CPU, fp32/fp64,
every classic cell, the LSTM also with ``proj_size``, minGRU/minLSTM and the
layer-normalised LSTM and GRU), is registered at import and compiled on its first
supported call. A cell no kernel implements runs the composite path under "auto". So does
a call with per-step regulariser noise (recurrent dropout in training, zoneout:
``rnnkit.nn.noise.StepNoise``) where no kernel takes ``noise=`` (``Kernel.noise``).
``rnnkit.nn.kernels.scan`` ("scan": torch ops, any device, fp32/fp64) is the parallel scan
of the cells whose gates read x_t only (minGRU, minLSTM): tried after "fused_cpu", so it
runs them off the CPU (under "auto" only there: ``scan.preferred``), or where forced by
name.

The switch, for debugging and for parity tests: ``rnnkit.set_backend(name)``, the
context manager ``rnnkit.use_backend(name)``, or the environment variable
``RNNKIT_BACKEND``. Besides the three backends, a registered kernel's name ("fused_cpu",
"scan") forces that kernel alone, as "fused" forces the first that takes the inputs (on
the CPU the compiled kernel runs the minimal cells too, so ``use_backend("scan")`` is how
to run the scan there). Forcing "fused" or a kernel where it does not support the inputs
is an error, never a silent fallback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from rnnkit.nn import runner
from rnnkit.nn.cells import Cell, State

BACKENDS = ("auto", "composite", "fused")
RunLayer = Callable[..., tuple[Tensor, list[State]]]
"""run_layer(cell, x [T, B, D], lengths [B] or None, states, weights) -> (out [T, B,
dirs*R], final states), ``rnnkit.nn.runner.run_layer``'s contract; a kernel with
``Kernel.noise`` also takes ``noise=`` (one ``rnnkit.nn.noise.StepNoise`` or None per
direction), and is called with it only when some direction has noise."""


class Step(Protocol):
    """One inference step of one layer-direction: (cell, x [1, B, D], state, (w_ih, w_hh,
    b_ih, b_hh)) -> (output [1, B, H], new state, each [1, B, H]); no autograd. bf16
    weights ask for bf16 products; ``y_bf16``/``state_bf16`` for bf16 results (see
    ``fused.step``)."""

    def __call__(
        self,
        cell: Cell,
        x: Tensor,
        state: State,
        weights: tuple,
        *,
        y_bf16: bool = False,
        state_bf16: bool = False,
    ) -> tuple[Tensor, State]: ...


@dataclass(frozen=True)
class Kernel:
    name: str
    supports: Callable[[Cell, Tensor], bool]
    run_layer: RunLayer
    step: Step | None = None
    """optional: the streaming fast path (``RNNBase`` uses it for T = 1 without grad)."""
    noise: bool = False
    """True if ``run_layer`` takes ``noise=`` (recurrent dropout and zoneout masks, as
    ``rnnkit.nn.noise.StepNoise`` documents); ``select`` skips the others for a call
    with per-step noise."""
    auto: Callable[[Cell, Tensor], bool] | None = None
    """optional: where "auto" picks it among the inputs it ``supports`` (None: all of
    them); a forced "fused" picks it wherever it supports the inputs."""


_kernels: list[Kernel] = []
_backend = os.environ.get("RNNKIT_BACKEND", "auto")


def _check(name: str) -> str:
    if name not in BACKENDS and name not in _kernel_names():
        raise ValueError(
            f"backend must be one of {BACKENDS} or a kernel's name {_kernel_names()}, got {name!r}"
        )
    return name


def _kernel_names() -> tuple[str, ...]:
    return tuple(k.name for k in _kernels)


def _candidates(backend: str) -> list[Kernel]:
    """The kernels a backend may pick, in order: all of them, or the one it names."""
    if backend in BACKENDS:
        return _kernels
    return [k for k in _kernels if k.name == backend]


def register(kernel: Kernel) -> None:
    """Add a fused kernel; later registrations are tried first."""
    _kernels.insert(0, kernel)


def get_backend() -> str:
    return _check(_backend)


def set_backend(name: str) -> None:
    """Force an implementation for every layer call: 'auto', 'composite', 'fused', or one
    registered kernel by its name ('fused_cpu', 'scan')."""
    global _backend
    _backend = _check(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """``with rnnkit.use_backend('composite'): ...`` sets the backend for a block."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def select(cell: Cell, x: Tensor, noise: bool = False) -> RunLayer:
    """The ``run_layer`` that the current backend picks for ``cell`` on input ``x``;
    ``noise``: the call carries per-step noise (``StepNoise``), so only a kernel with
    ``Kernel.noise`` (or the composite runner) will do."""
    backend = get_backend()
    if backend != "composite":
        for kernel in _candidates(backend):
            if (kernel.noise or not noise) and _takes(kernel, cell, x, backend):
                return kernel.run_layer
        if backend != "auto":
            what = " with recurrent dropout or zoneout" if noise else ""
            which = "no fused kernel supports" if backend == "fused" else "it does not support"
            raise RuntimeError(
                f"backend {backend!r} was forced but {which} cell {cell.label!r}"
                f"{what} on a {x.device.type} {x.dtype} input; use 'auto' or 'composite'"
            )
    return runner.run_layer


def dispatch_state() -> tuple[str, int, int]:
    """What ``select``/``select_step`` answer from besides the cell and the input: the
    backend and the registry, for a caller that keeps an answer (the streaming plan)."""
    return _backend, id(_kernels), len(_kernels)


def select_step(cell: Cell, x: Tensor) -> Step | None:
    """The single-step function of the kernel ``select`` picks, or None (composite, or a
    kernel without one)."""
    backend = get_backend()
    if backend == "composite":
        return None
    for kernel in _candidates(backend):
        if _takes(kernel, cell, x, backend):
            return kernel.step
    return None


def _takes(kernel: Kernel, cell: Cell, x: Tensor, backend: str) -> bool:
    """Whether ``backend`` runs ``kernel`` on these inputs: it supports them, and the
    backend is forced ("fused", a kernel's name) or the kernel has no ``auto`` preference
    against them."""
    if not kernel.supports(cell, x):
        return False
    return backend != "auto" or kernel.auto is None or kernel.auto(cell, x)


def _register_builtin() -> None:
    """The parallel scan, then the fused CPU kernels (tried first: on the CPU they run the
    minimal cells too); cheap here: the extension compiles on the first call it supports."""
    from rnnkit.nn.kernels import scan

    register(Kernel("scan", scan.supports, scan.run_layer, scan.step, auto=scan.preferred))
    from rnnkit.nn.kernels import fused

    register(Kernel("fused_cpu", fused.supports, fused.run_layer, fused.step, noise=True))


_register_builtin()
