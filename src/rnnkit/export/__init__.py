"""Taking a trained model out of rnnkit: the generic export machinery.

    from rnnkit.export import to_onnx
    to_onnx(rnnkit.GRU(32, 64, num_layers=2), x, "gru.onnx")       # a layer stack
    to_onnx(language_model, None, "lm.onnx")                        # a task model

``rnnkit.export.onnx`` builds ONNX graphs node by node (``onnx.helper``) with ONNX's own
``RNN``/``GRU``/``LSTM`` operators, so a runtime uses its fused kernels; each task folder
owns the adapter that turns its model into such a graph (``rnnkit.tasks.<t>.export``).
The ``onnx`` package is an optional dependency (``pip install 'rnnkit[export]'``),
imported on first use. Attributes load on first use, so importing this package loads
neither torch nor onnx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.export.onnx import ExportError, Graph, onnx_model, to_onnx

__all__ = ["ExportError", "Graph", "onnx_model", "to_onnx"]

__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "rnnkit.export.onnx"))
