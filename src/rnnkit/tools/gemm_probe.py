"""``python -m rnnkit.tools.gemm_probe``: what the GEMM probe measures on this machine.

For each shape bucket (B batch rows, G gate rows, H hidden units) it times every available
fp32 GEMM library of the fused kernel as ``rnnkit.nn.kernels.gemm.probe`` does (rounds
interleaved, each product's fastest time, scaled to a layer of ``gemm.LAYER_STEPS`` steps)
and prints GFLOP/s and the library ``pick`` would choose, then each library's rate on an
N^3 product (``gemm.peaks``). It measures only: it neither reads nor writes the choice
cache. The figures in ``docs/kernels.md`` come from it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from rnnkit.nn.kernels import gemm

SHAPES = ("1x768x256", "8x1536x512", "32x1024x256", "64x1536x512", "64x2048x512", "128x3072x1024")


def _shape(text: str) -> tuple[int, int, int]:
    try:
        B, G, H = (int(v) for v in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a shape is BxGxH, e.g. 64x1536x512; got {text!r}"
        ) from None
    return B, G, H


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", type=_shape, default=[_shape(s) for s in SHAPES])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=gemm.ROUNDS)
    parser.add_argument("--peak-size", type=int, default=2048)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [c for c in gemm.CANDIDATES if gemm.available(c)]
    missing = [c for c in gemm.CANDIDATES if c not in names]
    print(
        f"torch {torch.__version__}, {args.threads} threads; GFLOP/s of the probe's estimate "
        f"for a {gemm.LAYER_STEPS}-step layer direction (projection, steps, weight gradient; "
        f"each product's fastest of {args.rounds} rounds; {args.peak_size}^3: median round)"
    )
    print(f"{'B x G x H':>16} {'round':>5} " + " ".join(f"{c:>8}" for c in names) + "  choice")
    for M, N, K in args.shapes:
        seconds = gemm.probe(M, N, K, tuple(names), args.rounds, budget=float("inf"))
        steps = gemm.probe_steps(M, N, K)
        rates = [6 * M * N * K * gemm.LAYER_STEPS / seconds[c] / 1e9 for c in names]
        print(
            f"{M:>4} x{N:>5} x{K:>5} {steps:>5} "
            + " ".join(f"{r:8.1f}" for r in rates)
            + f"  {gemm.pick(seconds)}"
        )
    peaks = gemm.peaks(args.peak_size, args.rounds)
    print(f"{args.peak_size}^3: " + ", ".join(f"{c} {r:.1f}" for c, r in peaks.items()))
    if missing:
        print(f"not available here: {', '.join(missing)}")


if __name__ == "__main__":
    main()
