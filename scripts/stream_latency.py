"""The streaming step alone: one layer (B=1, D=H=256), state carried, no grad, fp32 and
under bf16 autocast, each cell in its own loop (no baseline interleaved, unlike `rnnkit
bench`, whose blocks of 200 calls alternate with torch.nn's).

    PYTHONPATH=src python scripts/stream_latency.py [--threads 2] [--calls 2000]

Prints the median over 7 blocks of --calls calls each, after 200 warm-up calls.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from rnnkit.nn.cells import CELLS
from rnnkit.nn.factory import recurrent_layer


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    for _ in range(200):
        fn()
    blocks = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        blocks.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"streaming step, B=1, D=H=256, {args.threads} threads, median of 7 x {args.calls}")
    for cell in (name for name, c in CELLS.items() if c.standard):  # the fused kernels' cells
        layer = recurrent_layer(cell, 256, 256).eval()
        x, h = torch.randn(1, 1, 256), torch.zeros(1, 1, 256)
        hx = (h, h.clone()) if cell == "lstm" else h
        with torch.no_grad():
            fp32 = per_call_us(lambda: layer(x, hx), args.calls)  # noqa: B023 (same iteration)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                bf16 = per_call_us(lambda: layer(x, hx), args.calls)  # noqa: B023
        print(f"{cell:18s} fp32 {fp32:6.1f} us   bf16 {bf16:6.1f} us")


if __name__ == "__main__":
    main()
