"""Training-step time of the parallel-scan cells (minGRU, minLSTM; Feng et al. 2024)
against rnnkit's fused LSTM and GRU, at equal hidden size and at the LSTM's parameter
count, in one process with the models alternating so that all see the same load.
Figures in docs/cells.md ("Parallel-scan cells: minGRU and minLSTM").

    OMP_NUM_THREADS=2 PYTHONPATH=src python scripts/scan_speed.py
    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/scan_speed.py --T 16 --shape 2,8,8 --repeats 2

One training step is forward + backward of one layer (outputs' loss a fixed random linear
form, every parameter and the input receiving gradients). Prints the median over
``--repeats`` rounds of each model at each T (default 512 and 2048, B=16, D=H=256), the
ratio LSTM time / model time (above 1: faster than the LSTM) and which implementation
ran: for the min cells what "auto" picks (``fused_cpu``, the compiled kernel, where it
builds) and the parallel scan forced (``use_backend("scan")``); ``--sequential`` adds
their step-by-step composite path at equal hidden size for comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

import rnnkit
from rnnkit.nn import kernels
from rnnkit.nn.layers import RNNBase


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _matched(cls: type[RNNBase], D: int, target: int) -> int:
    """The hidden size at which a min cell has about ``target`` parameters:
    num_gates * H' * (D + 1) (weight_ih and bias_ih only)."""
    gates = cls(1, 1).cell.num_gates
    return max(1, round(target / (gates * (D + 1))))


def _models(D: int, H: int, sequential: bool) -> list[tuple[str, RNNBase, str]]:
    """(label, layer, backend) of each model to time; the LSTM first (the baseline)."""
    torch.manual_seed(0)
    lstm = rnnkit.LSTM(D, H)
    target = _parameters(lstm)
    models = [("LSTM", lstm, "auto"), ("GRU", rnnkit.GRU(D, H), "auto")]
    for cls in (rnnkit.MinGRU, rnnkit.MinLSTM):  # what "auto" runs (the compiled kernel)
        models.append((f"{cls.__name__}", cls(D, H), "auto"))
    for cls in (rnnkit.MinGRU, rnnkit.MinLSTM):  # the parallel scan, forced
        models.append((f"{cls.__name__} (scan)", cls(D, H), "scan"))
    for cls in (rnnkit.MinGRU, rnnkit.MinLSTM):
        matched = cls(D, _matched(cls, D, target))
        models.append((f"{cls.__name__} (= LSTM params)", matched, "auto"))
    if sequential:
        for cls in (rnnkit.MinGRU, rnnkit.MinLSTM):
            models.append((f"{cls.__name__} (sequential)", cls(D, H), "composite"))
    return models


def _step(layer: RNNBase, backend: str, x: torch.Tensor, g: torch.Generator) -> Callable[[], float]:
    dout = torch.randn(x.shape[0], x.shape[1], layer.output_size, generator=g)

    def run() -> float:
        start = time.perf_counter()
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with kernels.use_backend(backend):
            out, _ = layer(x)
        out.backward(dout)
        return time.perf_counter() - start

    return run


def _ran(layer: RNNBase, backend: str, x: torch.Tensor) -> str:
    with kernels.use_backend(backend):
        run_layer = kernels.select(layer.cell, x)
    names = {k.run_layer: k.name for k in kernels._kernels}
    return names.get(run_layer, "composite")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", default="512,2048", help="comma-separated sequence lengths")
    parser.add_argument("--shape", default="16,256,256", help="B,D,H")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (medians)")
    parser.add_argument("--sequential", action="store_true", help="add the min cells' loop")
    args = parser.parse_args()
    B, D, H = (int(v) for v in args.shape.split(","))
    threads = int(os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads())))
    torch.set_num_threads(threads)
    models = _models(D, H, args.sequential)
    load = os.getloadavg()
    print(
        f"training step (forward + backward) of one layer, B={B} D={D}, fp32, {threads} "
        f"threads, median of {args.repeats}; load average at start "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs"
    )
    header = f"{'model':<28} {'H':>5} {'params':>8} {'ran':>10}"
    for T in (int(v) for v in args.T.split(",")):
        g = torch.Generator().manual_seed(T)
        x = torch.randn(T, B, D, generator=g).requires_grad_()
        steps = [_step(layer, backend, x, g) for _, layer, backend in models]
        for step in steps:  # warm-up: first-use compiles, allocator
            step()
        times: list[list[float]] = [[] for _ in models]
        for _ in range(args.repeats):
            for k, step in enumerate(steps):
                times[k].append(step())
        medians = [statistics.median(t) * 1e3 for t in times]
        print(f"\nT = {T}\n{header} {'ms':>9} {'LSTM/this':>10}")
        for (label, layer, backend), ms in zip(models, medians, strict=True):
            ran = _ran(layer, backend, x)
            params = _parameters(layer)
            print(
                f"{label:<28} {layer.hidden_size:>5} {params:>8} {ran:>10} "
                f"{ms:>9.1f} {medians[0] / ms:>10.2f}"
            )


if __name__ == "__main__":
    main()
