"""Taking a trained model out of rnnkit.

``rnnkit.export.torch_export``: ``to_torch_export`` and ``load_torch_export``, a model
through ``torch.export`` with dynamic sizes, saved and loaded without pickle.
Attributes load on first use, so importing this package loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.export.torch_export import load_torch_export, to_torch_export

__all__ = ["load_torch_export", "to_torch_export"]

__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "rnnkit.export.torch_export"))
