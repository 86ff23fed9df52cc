"""The forecaster's export adapter: ``Forecaster.forecast`` as one graph, over raw values
when the run's scaler (and differencing) are folded in.

    values [B, N, V] float32 -> mean [B, H, V] (and std [B, H, V] with a Gaussian head)

N is the model's window L (L + 1 past values when the run models differences), H its
horizon. With a scaler (``from_run``) the graph is ``api.model_forecast`` for one origin
per row: the values in the series' units in, the forecasts in the series' units out
(standardised with the training part's mean and std; with differencing, the differences
forecast and added up from the last value, their variances summed). Without one it is
``Forecaster.forecast`` in the scaled units. The direct strategy is one pass; the
recursive one is unrolled: H passes, each sliding the window over the last forecast.
Dropout is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.export.onnx import ExportError, Graph, linear, recurrent
from rnnkit.tasks.forecast.model import Forecaster
from rnnkit.tasks.forecast.series import Scaler


class ForecastExport(nn.Module):
    """``Forecaster.forecast`` for ``to_onnx``, optionally over raw values (module
    docstring)."""

    def __init__(
        self,
        model: Forecaster,
        scaler: Scaler | None = None,
        difference: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, Forecaster):
            raise ExportError(f"ForecastExport needs a Forecaster, got {type(model).__name__}")
        if difference and scaler is None:
            raise ExportError("a differenced forecaster is exported with its scaler")
        self.model, self.scaler, self.difference = model, scaler, difference
        self.metadata = dict(metadata or {})

    @torch.no_grad()
    def forward(self, values: Tensor) -> tuple[Tensor, ...]:
        """values [B, N, V] -> (mean [B, H, V], std [B, H, V] with a Gaussian head)."""
        x = values[:, 1:] - values[:, :-1] if self.difference else values
        if self.scaler is not None:
            x = (x - _row(self.scaler.mean)) / _row(self.scaler.std)
        mean, std = self.model.forecast(x)
        if self.scaler is not None:
            mean = mean * _row(self.scaler.std) + _row(self.scaler.mean)
            std = None if std is None else std * _row(self.scaler.std)
        if self.difference:
            mean = values[:, -1:] + mean.cumsum(1)
            std = None if std is None else (std**2).cumsum(1).sqrt()
        return (mean,) if std is None else (mean, std)

    def onnx_graph(self, example: Any = None) -> Graph:
        if example is not None:
            raise ExportError("the forecaster's graph takes no example (pass None)")
        m, c = self.model, self.model.config
        V, H = m.V, c.horizon
        g = Graph("rnnkit_forecaster")
        values = g.input("values", "float", ["B", "N", V])
        x = values
        if self.difference:  # [B, N, V] -> [B, N-1, V]
            end = np.iinfo(np.int64).max
            later = g.op("Slice", values, g.ints([1]), g.ints([end]), g.ints([1]))
            earlier = g.op("Slice", values, g.ints([0]), g.ints([-1]), g.ints([1]))
            x = g.op("Sub", later, earlier, hint="differences")
        if self.scaler is not None:
            x = g.op("Sub", x, g.array(_f32(self.scaler.mean), "series_mean"))
            x = g.op("Div", x, g.array(_f32(self.scaler.std), "series_std"), hint="scaled")
        if c.strategy == "direct":
            mean, log_var = self._forward(g, x)
        else:
            means: list[str] = []
            log_vars: list[str] = []
            window = x
            end = np.iinfo(np.int64).max
            for k in range(H):
                mean_k, log_var_k = self._forward(g, window, f"step{k}")  # [B, 1, V]
                means.append(mean_k)
                if log_var_k is not None:
                    log_vars.append(log_var_k)
                if k + 1 < H:
                    rest = g.op("Slice", window, g.ints([1]), g.ints([end]), g.ints([1]))
                    window = g.op("Concat", rest, mean_k, axis=1, hint="window")
            mean = means[0] if H == 1 else g.op("Concat", *means, axis=1)
            log_var = None
            if c.gaussian:
                log_var = log_vars[0] if H == 1 else g.op("Concat", *log_vars, axis=1)
        std = None if log_var is None else g.op("Exp", g.op("Mul", log_var, g.scalar(0.5)))
        if self.scaler is not None:
            scale = g.array(_f32(self.scaler.std), "series_std")
            mean = g.op("Add", g.op("Mul", mean, scale), g.array(_f32(self.scaler.mean), "mean"))
            std = None if std is None else g.op("Mul", std, scale)
        if self.difference:
            axis = g.ints(1, "axis")
            last = g.op(
                "Slice", values, g.ints([-1]), g.ints([np.iinfo(np.int64).max]), g.ints([1])
            )
            mean = g.op("Add", last, g.op("CumSum", mean, axis))
            if std is not None:
                std = g.op("Sqrt", g.op("CumSum", g.op("Mul", std, std), axis))
        g.output(mean, "mean", "float", ["B", H, V])
        if std is not None:
            g.output(std, "std", "float", ["B", H, V])
        g.metadata |= {
            "rnnkit.task": "forecast",
            "rnnkit.cell": c.cell,
            "rnnkit.strategy": c.strategy,
            "rnnkit.window": str(c.window + self.difference),
            "rnnkit.units": "series" if self.scaler is not None else "scaled",
        } | self.metadata
        return g

    def _forward(self, g: Graph, x: str, hint: str = "model") -> tuple[str, str | None]:
        """``Forecaster.forward``: x [B, L, V] -> (mean [B, S, V], log variance or None)."""
        m, c = self.model, self.model.config
        states, _ = recurrent(g, x, m.rnn, hint=f"{hint}_rnn")  # [B, L, H]
        last = g.op("Gather", states, g.ints(-1, "last"), axis=1)  # [B, H]
        width = m.V * (2 if c.gaussian else 1)
        out = g.op("Reshape", linear(g, last, m.head, rank=2), g.ints([0, -1, width], "shape"))
        if not c.gaussian:
            return out, None
        axis = g.ints([2], "axes")
        mean = g.op("Slice", out, g.ints([0]), g.ints([m.V]), axis, hint="mean")
        log_var = g.op("Slice", out, g.ints([m.V]), g.ints([2 * m.V]), axis)
        clipped = g.op("Clip", log_var, g.scalar(-12.0), g.scalar(12.0), hint="log_var")
        return mean, clipped


def _f32(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _row(values: np.ndarray) -> Tensor:
    return torch.as_tensor(_f32(values))  # [V], broadcast over [B, T, V]


def adapter(model: nn.Module) -> ForecastExport:
    if not isinstance(model, Forecaster):
        raise ExportError(f"expected a Forecaster, got {type(model).__name__}")
    return ForecastExport(model)


def from_run(path: str | Path) -> ForecastExport:
    """The forecaster of a trained run's ``best`` checkpoint (or a checkpoint folder)
    over raw values, its scaler and differencing folded in."""
    import json

    from rnnkit.tasks.forecast import api

    model, scaler, difference = api.load(path)
    return ForecastExport(
        model.eval(), scaler, difference, {"rnnkit.scaler": json.dumps(scaler.to_dict())}
    )
