"""Choosing an implementation of ``run_layer`` for each call.

Backends:
    "composite"  ``rnnkit.nn.runner.run_layer``: the cell's step under autograd, any device.
    "fused"      a kernel registered with ``register``, for the inputs it supports.
    "auto"       fused where a registered kernel supports the inputs (and, if it says
                 where, prefers them: ``Kernel.auto``), else composite.

The built-in fused kernel, ``rnnkit.nn.kernels.fused`` (CPU, fp32/fp64, every cell in
its standard layout), is registered at import and compiled on its first supported call.
A cell variant no kernel implements (``Cell.standard`` False: the LSTM with ``proj_size``)
runs the composite path under "auto". So does a call with per-step regulariser noise
(recurrent dropout in training, zoneout: ``rnnkit.nn.noise.StepNoise``) where no kernel
takes ``noise=`` (``Kernel.noise``). ``rnnkit.nn.kernels.scan`` (torch ops, any device,
fp32/fp64) is the parallel scan of the cells whose gates read x_t only (minGRU, minLSTM):
"auto" picks it off the CPU, a forced "fused" everywhere (``scan.preferred``).

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


def select(cell: Cell, x: Tensor, noise: bool = False) -> RunLayer:
    """The ``run_layer`` that the current backend picks for ``cell`` on input ``x``;
    ``noise``: the call carries per-step noise (``StepNoise``), so only a kernel with
    ``Kernel.noise`` (or the composite runner) will do."""
    backend = get_backend()
    if backend != "composite":
        for kernel in _kernels:
            if (kernel.noise or not noise) and _takes(kernel, cell, x, backend):
                return kernel.run_layer
        if backend == "fused":
            what = " with recurrent dropout or zoneout" if noise else ""
            raise RuntimeError(
                f"backend 'fused' was forced but no fused kernel supports cell {cell.label!r}"
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
    for kernel in _kernels:
        if _takes(kernel, cell, x, backend):
            return kernel.step
    return None


def _takes(kernel: Kernel, cell: Cell, x: Tensor, backend: str) -> bool:
    if not kernel.supports(cell, x):
        return False
    return backend == "fused" or kernel.auto is None or kernel.auto(cell, x)


def _register_builtin() -> None:
    """The fused CPU kernels; cheap here: they compile on the first call they support."""
    from rnnkit.nn.kernels import fused

    register(Kernel("fused_cpu", fused.supports, fused.run_layer, fused.step, noise=True))
    from rnnkit.nn.kernels import scan

    register(Kernel("scan", scan.supports, scan.run_layer, scan.step, auto=scan.preferred))


_register_builtin()
