"""The precision of a fused kernel's large products, set per call by the layers.

Autocast does not reach into a compiled kernel, so a layer under ``torch.autocast`` says
what it wants here: ``with reduced_products(torch.bfloat16): ...`` makes the fused CPU
kernel compute its matrix products (the input projection, the per-step recurrent product,
dx and the weight gradients) in bf16 with fp32 accumulation; its gate math and states stay
fp32. The composite path ignores it (it computes in the parameters' dtype).
"""

from __future__ import annotations

import contextlib
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
