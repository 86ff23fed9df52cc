"""One layer's training step, ours against torch.nn, in the checkout on PYTHONPATH: run it
alternately from two checkouts to tell a regression from the machine of the day.

    git worktree add /tmp/old 807f073
    for i in 1 2; do
        PYTHONPATH=/tmp/old/src python scripts/layer_ab.py old
        PYTHONPATH=src python scripts/layer_ab.py new
    done

Prints the median of 9 alternating training steps (forward + backward) of each, at S2
(T=100, B=64, D=256, H=512, fp32, 2 threads) unless told otherwise; `--precision bf16` runs
both under `torch.autocast("cpu", dtype=torch.bfloat16)`; `--proj-size P` projects the
LSTM's h to P units in both (torch.nn.LSTM's `proj_size`). `RNNKIT_BACKEND=composite`
times rnnkit's composite path instead of its fused kernel.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import rnnkit
from rnnkit.nn.cells import CELLS, lstm_cell
from rnnkit.nn.layers import RNNBase

TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label")
    parser.add_argument("--cell", default="lstm", choices=sorted(TORCH))
    parser.add_argument("--shape", default="100,64,256,512", help="T,B,D,H")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--proj-size", type=int, default=0, help="lstm: project h to P units")
    args = parser.parse_args()
    T, B, D, H = (int(v) for v in args.shape.split(","))
    P = args.proj_size
    if P and args.cell != "lstm":
        parser.error(f"--proj-size needs --cell lstm, got --cell {args.cell}")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    ours = RNNBase(lstm_cell(P) if P else CELLS[args.cell], D, H)
    theirs = nn.LSTM(D, H, proj_size=P) if P else TORCH[args.cell](D, H)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, D, requires_grad=True)
    dout = torch.randn(T, B, P or H)

    def step(module: nn.Module) -> float:
        start = time.perf_counter()
        module.zero_grad()
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            out, _ = module(x)
        out.float().backward(dout)
        return time.perf_counter() - start

    for _ in range(2):
        step(ours), step(theirs)
    times = [(step(ours), step(theirs)) for _ in range(args.repeats)]
    mine = statistics.median(t[0] for t in times) * 1e3
    base = statistics.median(t[1] for t in times) * 1e3
    what = f"{args.cell} proj_size={P}" if P else args.cell
    print(
        f"{args.label} {what} {args.precision}: ours {mine:.1f} ms, "
        f"torch.nn {base:.1f} ms, ratio {base / mine:.2f} ({rnnkit.__file__})"
    )


if __name__ == "__main__":
    main()
