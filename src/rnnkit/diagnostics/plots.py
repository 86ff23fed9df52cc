"""PNG plots of the diagnostics, with matplotlib's object API (no pyplot global state,
no display needed)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from rnnkit.common.io import atomic_path
from rnnkit.diagnostics.gates import HIGH, LOW, GateTrace, gate_trace
from rnnkit.diagnostics.unroll import unroll
from rnnkit.nn.layers import RNNBase


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_path(path) as tmp:  # the temporary's name has no suffix: name the format
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png")
    return path


def plot_curves(
    curves: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    title: str,
    ylabel: str,
    xlabel: str = "time step t",
    log: bool = True,
    xs: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """One line per named curve (e.g. ``GradientFlow.norms[l, d]`` per cell)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for label, y in curves.items():
        y = np.asarray(y, dtype=float)
        x = np.arange(len(y)) if xs is None else np.asarray(xs[label])
        ax.plot(x, y, label=label, marker="o" if np.isfinite(y).sum() < 3 else None)
    if log:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_gate_distributions(trace: GateTrace, path: str | Path, *, title: str = "") -> Path:
    """Per gate: the 10/50/90 % quantiles over batch x units at each step (band and
    median), and the fraction saturated (< LOW or > HIGH) on the right axis."""
    names = list(trace.gates)
    fig = Figure(figsize=(7, 2.2 * len(names)))
    for k, name in enumerate(names):
        ax = fig.add_subplot(len(names), 1, k + 1)
        q = trace.quantiles(name)
        t = np.arange(q.shape[1])
        ax.fill_between(t, q[0], q[2], alpha=0.3, label="10-90 %")
        ax.plot(t, q[1], label="median")
        ax.axhline(LOW, color="grey", lw=0.5, ls="--")
        ax.axhline(HIGH, color="grey", lw=0.5, ls="--")
        ax.set(ylim=(0, 1), ylabel=f"gate {name}")
        twin = ax.twinx()
        twin.plot(t, trace.saturated_by_time(name), color="C3", lw=1, label="saturated")
        twin.set(ylim=(0, 1), ylabel="saturated", yticks=[0, 0.5, 1])
        if k == 0:
            ax.set_title(title or "gate values over time")
            ax.legend(loc="upper left", fontsize=7)
            twin.legend(loc="upper right", fontsize=7)
    ax.set_xlabel("time step t")
    return _save(fig, path)


def plot_unit_heatmap(
    values: np.ndarray,
    labels: Sequence[str],
    units: Sequence[int],
    path: str | Path,
    *,
    title: str = "",
    vmin: float = -1.0,
    vmax: float = 1.0,
) -> Path:
    """values [T, H] for one sequence; one row per chosen unit, one column per input
    token (``labels``, already decoded by the caller)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[0] != len(labels):
        raise ValueError(
            f"values must be [T, H] with T = len(labels) = {len(labels)}, got shape {values.shape}"
        )
    bad = [u for u in units if not 0 <= u < values.shape[1]]
    if bad:
        raise ValueError(f"units {bad} are out of range [0, {values.shape[1]})")
    T = len(labels)
    fig = Figure(figsize=(max(4.0, 0.35 * T + 1.5), 0.4 * len(units) + 1.6))
    ax = fig.add_subplot()
    image = ax.imshow(values[:, list(units)].T, aspect="auto", cmap="RdBu_r", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(T), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(len(units)), [f"unit {u}" for u in units], fontsize=8)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03)
    return _save(fig, path)


def unit_heatmap(
    layer: RNNBase,
    x: Tensor,
    tokens: Sequence[object],
    decode: Callable[[object], str],
    units: Sequence[int],
    path: str | Path,
    *,
    what: str = "h",
    layer_index: int = 0,
    direction: int = 0,
    title: str = "",
) -> Path:
    """A heat map of chosen units of ``layer`` over one input text.

    x: the layer's input for that text, [T, D] (or [T, 1, D]; [1, T, D] if batch_first),
    e.g. the embedded ``tokens``; ``decode(token)`` labels each column. ``what`` is "h"
    (hidden state) or a gate name of the cell ("r", "z"; "i", "f", "o").
    """
    if x.dim() == 2:
        x = x.unsqueeze(0 if layer.batch_first else 1)
    if x.shape[0 if layer.batch_first else 1] != 1:
        raise ValueError(f"x must hold one sequence, got shape {tuple(x.shape)}")
    T = x.shape[1 if layer.batch_first else 0]
    if len(tokens) != T:
        raise ValueError(f"got {len(tokens)} tokens for an input of {T} steps")
    if what == "h":
        with torch.no_grad():
            hidden = unroll(layer, x).hidden(layer_index, direction)
        values, low = torch.stack(hidden)[:, 0], -1.0  # [T, H]
    else:
        gates = gate_trace(layer, x, layer_index=layer_index, direction=direction).gates
        if what not in gates:
            raise ValueError(f"what must be 'h' or one of {sorted(gates)}, got {what!r}")
        values, low = gates[what][:, 0], 0.0
    return plot_unit_heatmap(
        values.numpy(),
        [decode(t) for t in tokens],
        units,
        path,
        title=title or f"{what} of units {list(units)}",
        vmin=low,
    )
