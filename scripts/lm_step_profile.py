"""Where one language-model training step spends its time, part by part.

    PYTHONPATH=src python scripts/lm_step_profile.py                  # PTB small config
    PYTHONPATH=src python scripts/lm_step_profile.py --vocab 67 --hidden 512 \
        --embedding 128 --batch 64 --bptt 100                          # Tiny Shakespeare

Times (medians of --repeats, after warm-up) of a whole step of ``LanguageModel`` (the
trainer's loss, SGD step and clipping included) and of its parts alone at the same
shapes: the recurrent stack forward + backward, the output layer's three GEMMs (logits,
their gradient w.r.t. the hidden states and w.r.t. the weight), the loss forward +
backward. The output layer is 3 * 2 * H * V FLOPs per token however it is computed, so
its GEMM time bounds the tokens per second of any implementation on this machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from rnnkit.bench import time_alternating
from rnnkit.models.lm import LanguageModel, LMConfig
from rnnkit.train.losses import cross_entropy


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    (ms,), _ = time_alternating([fn], repeats, warmup=3)
    return ms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", default="lstm")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--embedding", type=int, default=200)
    p.add_argument("--vocab", type=int, default=10002)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--bptt", type=int, default=20)
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    torch.manual_seed(0)
    config = LMConfig(cell=a.cell, num_layers=a.layers, hidden_size=a.hidden,
                      embedding_size=a.embedding)  # fmt: skip
    model = LanguageModel(config, a.vocab)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = torch.randint(0, a.vocab, (a.bptt + 1, a.batch))
    inputs, targets = ids[:-1], ids[1:].flatten()
    N, H, V = a.bptt * a.batch, a.hidden, a.vocab

    def whole_step() -> None:
        logits, _ = model(inputs)
        loss = cross_entropy(logits.flatten(0, 1), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()

    x = model.embedding(inputs).detach().requires_grad_()  # type: ignore[misc]

    def recurrent() -> None:
        out, _ = model.rnn(x)
        out.backward(torch.ones_like(out))

    h, w = torch.randn(N, H), model.decoder.weight.detach()
    g, logits = torch.randn(N, V), torch.randn(N, V, requires_grad=True)
    parts = {
        "whole training step": whole_step,
        f"recurrent stack fwd+bwd ({a.layers}x{H} {a.cell})": recurrent,
        "output layer: logits = h W^T + b": lambda: torch.addmm(model.decoder.bias, h, w.t()),
        "output layer: dL/dh = g W": lambda: g @ w,
        "output layer: dL/dW = g^T h": lambda: g.t() @ h,
        "loss fwd+bwd (one-pass cross-entropy)": lambda: cross_entropy(logits, targets).backward(),
    }
    print(f"{a.layers}x{H} {a.cell}, V={V}, batch {a.batch} x bptt {a.bptt} = {N} tokens per "
          f"step, {torch.get_num_threads()} threads")  # fmt: skip
    times = {name: median_ms(fn, a.repeats) for name, fn in parts.items()}
    whole = times["whole training step"]
    for name, ms in times.items():
        print(f"{name:48s} {ms:8.2f} ms  {100 * ms / whole:5.1f}%")
    output_ms = sum(ms for name, ms in times.items() if name.startswith("output layer"))
    flops = 3 * 2 * N * H * V
    print(f"output layer GEMMs: {output_ms:.2f} ms = {flops / output_ms / 1e6:.1f} GFLOP/s; "
          f"alone they allow at most {N / output_ms * 1e3:,.0f} tokens/s")  # fmt: skip
    print(f"whole step: {N / whole * 1e3:,.0f} tokens/s")


if __name__ == "__main__":
    main()
