"""Taking a trained model out of rnnkit: the generic export machinery.

    from rnnkit.export import to_onnx, to_torch_export
    to_onnx(rnnkit.GRU(32, 64, num_layers=2), x, "gru.onnx")       # a layer stack
    to_onnx(language_model, None, "lm.onnx")                        # a task model
    to_torch_export(rnnkit.GRU(32, 64), (x,), "gru.pt2")            # torch.export, dynamic T, B

``rnnkit.export.onnx`` builds ONNX graphs node by node (``onnx.helper``) with ONNX's own
``RNN``/``GRU``/``LSTM`` operators, so a runtime uses its fused kernels; each task folder
owns the adapter that turns its model into such a graph (``rnnkit.tasks.<t>.export``).
The ``onnx`` package is an optional dependency (``pip install 'rnnkit[export]'``),
imported on first use. ``rnnkit.export.torch_export``: ``to_torch_export`` and
``load_torch_export``, a model through ``torch.export`` with dynamic sizes (the fused
kernels as ``torch.library`` operators, so loading needs rnnkit installed), saved and
loaded without pickle. Attributes load on first use, so importing this package loads
neither torch nor onnx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.export.onnx import ExportError, Graph, onnx_model, to_onnx
    from rnnkit.export.torch_export import load_torch_export, to_torch_export

__all__ = ["ExportError", "Graph", "load_torch_export", "onnx_model", "to_onnx", "to_torch_export"]

__getattr__ = lazy_exports(
    __name__,
    dict.fromkeys(["ExportError", "Graph", "onnx_model", "to_onnx"], "rnnkit.export.onnx")
    | dict.fromkeys(["load_torch_export", "to_torch_export"], "rnnkit.export.torch_export"),
)
