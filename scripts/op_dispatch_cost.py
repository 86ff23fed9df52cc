"""What the dispatcher costs a fused layer call: the eager path (``ops.layer``, which eager
layers take) against the dispatched custom operator (``ops.fused_layer``, which traced
code runs), on the same compiled kernel, calls alternating in one process so that both
see the same load. Figures in docs/export.md ("Eager speed").

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/op_dispatch_cost.py --shape 5,2,16,16
    OMP_NUM_THREADS=2 PYTHONPATH=src python scripts/op_dispatch_cost.py --repeats 15

Prints the median time of an inference call and of a training call (forward + backward)
of one GRU layer at T,B,D,H (default 100,64,256,512) through each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from rnnkit.nn.kernels import ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="100,64,256,512", help="T,B,D,H")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls of each")
    parser.add_argument("--calls", type=int, default=1, help="calls per timing (tiny shapes)")
    args = parser.parse_args()
    T, B, D, H = (int(v) for v in args.shape.split(","))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    g = torch.Generator().manual_seed(0)

    def leaf(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) / H**0.5).requires_grad_()

    x, h0 = leaf(T, B, D), leaf(B, H)
    w = [leaf(3 * H, D), leaf(3 * H, H), leaf(3 * H), leaf(3 * H)]
    dout = torch.randn(T, B, H, generator=g)
    lists = ([h0], [], [w[0]], [w[1]], [w[2]], [w[3]], [])  # the last: no noise

    def inference(run):
        with torch.no_grad():
            run(2, x, None, *lists, False, False)

    def training(run):
        out = run(2, x, None, *lists, True, False)[0]
        torch.autograd.grad(out, [x, h0, *w], dout)

    paths = {"eager path": ops.layer, "dispatched operator": ops.fused_layer}
    for kind in (inference, training):
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(2):
            for run in paths.values():
                kind(run)
        for _ in range(args.repeats):
            for name, run in paths.items():
                start = time.perf_counter()
                for _ in range(args.calls):
                    kind(run)
                times[name].append((time.perf_counter() - start) / args.calls)
        for name, ts in times.items():
            median = statistics.median(ts)
            shown = f"{median * 1e6:.0f} us" if median < 1e-2 else f"{median * 1e3:.1f} ms"
            print(f"{kind.__name__:9} {name:20} {shown}  (T,B,D,H = {args.shape})")


if __name__ == "__main__":
    main()
