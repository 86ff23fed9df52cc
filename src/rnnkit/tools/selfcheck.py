"""Run every cell through each of its implementations on the same random problem and
report the largest relative disagreement, forward and backward (float64).

The NumPy reference is the oracle; the composite path, any fused kernel that supports
the input, and ``torch.nn`` (for the forms it has) are compared with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from rnnkit.nn import kernels, reference
from rnnkit.nn.cells import CELLS, Cell
from rnnkit.nn.layers import RNNBase

TOLERANCE = 1e-10
_TORCH_LAYERS: dict[str, Callable[..., torch.nn.Module]] = {
    "RNN_TANH": functools.partial(torch.nn.RNN, nonlinearity="tanh"),
    "RNN_RELU": functools.partial(torch.nn.RNN, nonlinearity="relu"),
    "GRU": torch.nn.GRU,
    "LSTM": torch.nn.LSTM,
}
T, B, D, H = 7, 3, 5, 8


def _relative(a: np.ndarray, e: np.ndarray) -> float:
    return float(np.abs(a - e).max() / max(np.abs(e).max(), 1e-300))


def _layer_gradients(layer: torch.nn.Module, x, state0, dys, dfinal, backend: str | None):
    """Forward and backward of one layer; -> (ys, finals, dict of gradients)."""
    layer.zero_grad(set_to_none=True)  # the same layer runs once per implementation
    x = x.clone().requires_grad_()
    state0 = tuple(s.clone().requires_grad_() for s in state0)
    hx = state0[0][None] if len(state0) == 1 else tuple(s[None] for s in state0)
    if backend is None:
        ys, final = layer(x, hx)
    else:
        with kernels.use_backend(backend):
            ys, final = layer(x, hx)
    finals = final if isinstance(final, tuple) else (final,)
    loss = (ys * dys).sum() + sum((f[0] * d).sum() for f, d in zip(finals, dfinal, strict=True))
    loss.backward()
    grads = {"x": x.grad, **{f"state0[{k}]": s.grad for k, s in enumerate(state0)}}
    grads |= {name.removesuffix("_l0"): p.grad for name, p in layer.named_parameters()}
    return ys, tuple(f[0] for f in finals), grads


def compare_cell(cell: Cell, seed: int) -> dict[str, float]:
    """Relative error of each implementation against the reference, forward and backward."""
    torch.manual_seed(seed)
    layer = RNNBase(cell, D, H, dtype=torch.float64)
    x = torch.randn(T, B, D, dtype=torch.float64)
    state0 = tuple(torch.randn(B, H, dtype=torch.float64) for _ in range(cell.num_states))
    dys = torch.randn(T, B, H, dtype=torch.float64)
    dfinal = tuple(torch.randn(B, H, dtype=torch.float64) for _ in range(cell.num_states))

    forward, backward = reference.for_cell(cell)
    w = {n.removesuffix("_l0"): p.detach().numpy() for n, p in layer.named_parameters()}
    params = reference.Params(w["weight_ih"], w.get("weight_hh"), w["bias_ih"], w.get("bias_hh"))
    ref_ys, ref_final, cache = forward(x.numpy(), tuple(s.numpy() for s in state0), params)
    g = backward(cache, dys.numpy(), tuple(d.numpy() for d in dfinal))
    ref_grads = {"x": g.x, "weight_ih": g.w_ih, "weight_hh": g.w_hh}
    ref_grads |= {"bias_ih": g.b_ih, "bias_hh": g.b_hh}
    ref_grads = {k: v for k, v in ref_grads.items() if v is not None}  # minGRU: no w_hh
    ref_grads |= {f"state0[{k}]": s for k, s in enumerate(g.state0)}

    candidates: dict[str, tuple[torch.nn.Module, str | None]] = {"composite": (layer, "composite")}
    if any(k.supports(cell, x) for k in kernels._kernels):
        candidates["fused"] = (layer, "fused")
    if cell.torch_mode is not None:
        theirs = _TORCH_LAYERS[cell.torch_mode](D, H, dtype=torch.float64)
        theirs.load_state_dict(layer.state_dict())
        candidates["torch.nn"] = (theirs, None)

    errors = {}
    for name, (module, backend) in candidates.items():
        ys, finals, grads = _layer_gradients(module, x, state0, dys, dfinal, backend)
        forward_error = max(
            _relative(ys.detach().numpy(), ref_ys),
            *(_relative(f.detach().numpy(), r) for f, r in zip(finals, ref_final, strict=True)),
        )
        backward_error = max(_relative(grads[k].numpy(), ref_grads[k]) for k in ref_grads)
        errors[f"{name} forward"] = forward_error
        errors[f"{name} backward"] = backward_error
    return errors


def run(seed: int = 0) -> bool:
    """Print the agreement table for every cell; True if all agree within TOLERANCE."""
    table = Table(
        title=f"relative error against the NumPy reference (float64, T={T} B={B} "
        f"D={D} H={H}); tolerance {TOLERANCE:.0e}"
    )
    table.add_column("cell")
    table.add_column("implementation")
    table.add_column("forward", justify="right")
    table.add_column("backward", justify="right")
    ok = True
    for cell in CELLS.values():
        errors = compare_cell(cell, seed)
        for name in dict.fromkeys(k.rsplit(" ", 1)[0] for k in errors):
            fwd, bwd = errors[f"{name} forward"], errors[f"{name} backward"]
            ok &= fwd <= TOLERANCE and bwd <= TOLERANCE
            table.add_row(cell.name, name, f"{fwd:.1e}", f"{bwd:.1e}")
    console = Console()
    console.print(table)
    console.print("[green]all implementations agree[/]" if ok else "[red]DISAGREEMENT[/]")
    return ok
