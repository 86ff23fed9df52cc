"""Training-step time of the layer-normalised LSTM and GRU (docs/cells.md, "Layer-normalised
LSTM and GRU") on the composite path and on the fused CPU kernel, against rnnkit's plain
fused LSTM and GRU, in one process with the models alternating so that all see the same
load. Figures in docs/cells.md.

    OMP_NUM_THREADS=2 PYTHONPATH=src python scripts/layer_norm_speed.py
    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/layer_norm_speed.py --shape 4,2,8,8 --repeats 2

One training step is forward + backward of a stack (the loss the outputs' sum, every
parameter receiving gradients). Prints the median over ``--repeats`` rounds of each model
and its time relative to the plain cell of its kind on the fused kernel.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import rnnkit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="100,32,128,512", help="T,B,D,H")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (medians)")
    args = parser.parse_args()
    T, B, D, H = (int(v) for v in args.shape.split(","))
    threads = int(os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads())))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    L = args.layers
    models = [
        ("GRU", rnnkit.GRU(D, H, L), "auto"),
        ("GRU-LN", rnnkit.GRU(D, H, L, layer_norm=True), "auto"),
        ("GRU-LN (composite)", rnnkit.GRU(D, H, L, layer_norm=True), "composite"),
        ("LSTM", rnnkit.LSTM(D, H, L), "auto"),
        ("LSTM-LN", rnnkit.LSTM(D, H, L, layer_norm=True), "auto"),
        ("LSTM-LN (composite)", rnnkit.LSTM(D, H, L, layer_norm=True), "composite"),
    ]
    x = torch.randn(T, B, D)

    def step(layer: torch.nn.Module, backend: str) -> float:
        start = time.perf_counter()
        layer.zero_grad(set_to_none=True)
        with rnnkit.use_backend(backend):
            out, _ = layer(x)
        out.sum().backward()
        return time.perf_counter() - start

    for _, layer, backend in models:  # warm-up: first-use compiles, allocator
        step(layer, backend)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(args.repeats):
        for k, (_, layer, backend) in enumerate(models):
            times[k].append(step(layer, backend))
    medians = [statistics.median(t) * 1e3 for t in times]
    load = os.getloadavg()
    print(
        f"training step (forward + backward) of a {L}-layer stack, T={T} B={B} D={D} H={H}, "
        f"fp32, {threads} threads, median of {args.repeats}; load average at the end "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'model':<22} {'ms':>9} {'plain/this':>11}")
    for k, ((label, _, _), ms) in enumerate(zip(models, medians, strict=True)):
        plain = medians[0 if k < 3 else 3]
        print(f"{label:<22} {ms:>9.1f} {plain / ms:>11.2f}")


if __name__ == "__main__":
    main()
