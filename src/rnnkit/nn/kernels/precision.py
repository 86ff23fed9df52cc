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


def products() -> torch.dtype | None:
    """The reduced precision asked for the large products, or None (the inputs' dtype)."""
    return _products.get()


@contextlib.contextmanager
def reduced_products(dtype: torch.dtype | None) -> Iterator[None]:
    token = _products.set(dtype)
    try:
        yield
    finally:
        _products.reset(token)
