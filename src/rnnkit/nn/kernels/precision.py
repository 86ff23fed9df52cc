"""The precision of a fused kernel's large products, set per call by the layers.

Autocast does not reach into a compiled kernel, so a layer under ``torch.autocast`` says
what it wants here: ``with reduced_products(torch.bfloat16): ...`` makes the fused CPU
kernel compute its matrix products (the input projection, the per-step recurrent product,
dx and the weight gradients) in bf16 with fp32 accumulation; its gate math and states stay
fp32. The composite path ignores it (it computes in the parameters' dtype).

On a CPU without bf16 instructions the same products are emulated: operands rounded to
bf16, multiplied in fp32 (``bf16_native``, ``to_bf16``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

import torch

_products: ContextVar[torch.dtype | None] = ContextVar("rnnkit_products", default=None)
_traced: list[torch.dtype | None] = [None]
"""The same while ``torch.compile`` traces: its tracer cannot enter a ContextVar, and a
traced region runs in one thread."""


def products() -> torch.dtype | None:
    """The reduced precision asked for the large products, or None (the inputs' dtype)."""
    if torch.compiler.is_compiling():
        return _traced[0]
    return _products.get()


@contextlib.contextmanager
def reduced_products(dtype: torch.dtype | None) -> Iterator[None]:
    if torch.compiler.is_compiling():
        previous, _traced[0] = _traced[0], dtype
        try:
            yield
        finally:
            _traced[0] = previous
        return
    token = _products.set(dtype)
    try:
        yield
    finally:
        _products.reset(token)


_native: list[bool | None] = [None]


def bf16_native() -> bool:
    """Whether this CPU multiplies bf16 natively: oneDNN's bf16 kernels need AVX-512 (BW,
    VL, DQ) or AVX-NE-CONVERT. Where not (an AVX2-only CPU), torch's bf16 matmul falls
    far behind its fp32 one (docs/kernels.md, "A CPU without bf16 instructions"), so rnnkit
    emulates its bf16 products (``to_bf16``). ``RNNKIT_BF16=emulate`` forces the emulation
    and ``=native`` the native path; read once per process (``set_bf16_native`` changes it,
    for tests)."""
    native = _native[0]
    if native is None:
        forced = os.environ.get("RNNKIT_BF16", "").strip().lower()
        if forced not in ("", "native", "emulate"):
            raise ValueError(f"RNNKIT_BF16 must be 'native' or 'emulate', got {forced!r}")
        if forced:
            native = forced == "native"
        else:
            probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
            native = bool(probe()) if probe is not None else False
        _native[0] = native
    return native


def set_bf16_native(native: bool | None) -> None:
    """Force the native (True) or emulated (False) bf16 products, or detect again (None)."""
    _native[0] = native


def to_bf16(t: torch.Tensor) -> torch.Tensor:
    """t rounded to bf16, as an operand of a bf16 product with fp32 accumulation: a bf16
    tensor where the CPU multiplies bf16 natively (``bf16_native``), else an fp32 tensor
    holding the same values, for torch's fp32 matmul. A product of two bf16 values is exact
    in fp32 and the sums accumulate in fp32 either way, so both compute the same products
    (the native result is then rounded to bf16, the emulated one is not). On other devices
    than the CPU, always bf16."""
    low = t.to(torch.bfloat16)
    if t.device.type != "cpu" or bf16_native():
        return low
    return low.float()
