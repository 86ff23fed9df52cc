"""Choosing an implementation of ``run_layer`` for each call.

Backends:
    "composite"  ``rnnkit.nn.runner.run_layer``: the cell's step under autograd, any device.
    "fused"      a kernel registered with ``register``, for the inputs it supports.
    "auto"       fused where a registered kernel supports the inputs, else composite.

The built-in fused kernel, ``rnnkit.nn.kernels.fused`` (CPU, fp32/fp64, every cell in
its standard layout), is registered at import and compiled on its first supported call.
A cell variant no kernel implements (``Cell.standard`` False: the LSTM with ``proj_size``)
runs the composite path under "auto". ``rnnkit.nn.kernels.scan`` (torch ops, any device,
fp32/fp64) is the parallel scan of the cells whose gates read x_t only (minGRU, minLSTM).

The switch, for debugging and for parity tests: ``rnnkit.set_backend(name)``, the
context manager ``rnnkit.use_backend(name)``, or the environment variable
``RNNKIT_BACKEND``. Forcing "fused" where no kernel supports the inputs is an error,
never a silent fallback.
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
RunLayer = Callable[[Cell, Tensor, "Tensor | None", list[State], list], tuple[Tensor, list[State]]]


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


_kernels: list[Kernel] = []
_backend = os.environ.get("RNNKIT_BACKEND", "auto")


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def register(kernel: Kernel) -> None:
    """Add a fused kernel; later registrations are tried first."""
    _kernels.insert(0, kernel)


def get_backend() -> str:
    return _check(_backend)


def set_backend(name: str) -> None:
    """Force an implementation for every layer call: 'auto', 'composite' or 'fused'."""
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


def select(cell: Cell, x: Tensor) -> RunLayer:
    """The ``run_layer`` that the current backend picks for ``cell`` on input ``x``."""
    backend = get_backend()
    if backend != "composite":
        for kernel in _kernels:
            if kernel.supports(cell, x):
                return kernel.run_layer
        if backend == "fused":
            raise RuntimeError(
                f"backend 'fused' was forced but no fused kernel supports cell {cell.label!r} "
                f"on a {x.device.type} {x.dtype} input; use 'auto' or 'composite'"
            )
    return runner.run_layer


def select_step(cell: Cell, x: Tensor) -> Step | None:
    """The single-step function of the kernel ``select`` picks, or None (composite, or a
    kernel without one)."""
    if get_backend() == "composite":
        return None
    for kernel in _kernels:
        if kernel.supports(cell, x):
            return kernel.step
    return None


def _register_builtin() -> None:
    """The fused CPU kernels; cheap here: they compile on the first call they support."""
    from rnnkit.nn.kernels import fused

    register(Kernel("fused_cpu", fused.supports, fused.run_layer, fused.step))
    from rnnkit.nn.kernels import scan

    register(Kernel("scan", scan.supports, scan.run_layer, scan.step))


_register_builtin()
