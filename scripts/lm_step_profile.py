"""Where one language-model training step spends its time, part by part.

    PYTHONPATH=src python scripts/lm_step_profile.py                  # PTB small config
    PYTHONPATH=src python scripts/lm_step_profile.py --vocab 67 --hidden 512 \
        --embedding 128 --batch 64 --bptt 100                          # Tiny Shakespeare
    PYTHONPATH=src python scripts/lm_step_profile.py --precision bf16 # under bf16 autocast

Times (medians of --repeats, after warm-up) of a whole step of ``LanguageModel`` (the
trainer's ``model.loss``, SGD step and clipping included), of the same step written with
torch.nn alone, and of the parts of ours alone at the same shapes: the recurrent stack
forward + backward, the output layer's three GEMMs in the layout rnnkit runs them
(z^T = W h^T + b, dL/dh = P^T W, dL/dW = P h with P = dL/dz^T [V, N]), and the output
layer with its loss forward + backward as one (``projected_cross_entropy``) beside
torch.nn's ``F.linear`` + ``F.cross_entropy``. The output layer is 3 * 2 * H * V FLOPs
per token however it is computed, so its GEMM time bounds the tokens per second of any
implementation on this machine. Last, the model's GEMM FLOPs per token against the
machine's GEMM peak in that precision, measured in the same run with the fastest library
(``torch.mm`` at 2048^3; in fp32 also the fused kernel's GEMM libraries): the tokens per
second no implementation of this model can pass here, and the share of it the step runs.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable

import torch

from rnnkit.tasks.lm.loss import projected_cross_entropy
from rnnkit.tasks.lm.model import LanguageModel, LMConfig
from rnnkit.tools.bench import gemm_peak_gflops, library_peaks, time_alternating


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    (ms,), _ = time_alternating([fn], repeats, warmup=3)
    return ms


def autocast(a: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast for --precision bf16 (the forward and the loss, as the trainer runs
    them), else nothing."""
    if a.precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def under(a: argparse.Namespace, fn: Callable[[], object]) -> Callable[[], object]:
    """fn run under ``autocast(a)``."""

    def run() -> object:
        with autocast(a):
            return fn()

    return run


def torch_nn_step(a: argparse.Namespace, inputs: torch.Tensor, targets: torch.Tensor):
    """The same step written with torch.nn alone (nn.LSTM/GRU/RNN, F.cross_entropy), or
    None for a cell torch.nn lacks (gru_reset_before) or a step it refuses here (oneDNN
    has no bf16 LSTM on a CPU without bf16 instructions)."""
    if a.cell == "gru_reset_before":
        return None
    kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(a.cell, torch.nn.RNN)
    extra = {"nonlinearity": a.cell.removeprefix("rnn_")} if kind is torch.nn.RNN else {}
    torch.manual_seed(0)
    emb = torch.nn.Embedding(a.vocab, a.embedding)
    rnn = kind(a.embedding, a.hidden, a.layers, **extra)
    dec = torch.nn.Linear(a.hidden, a.vocab)
    params = [*emb.parameters(), *rnn.parameters(), *dec.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.1)

    def step() -> None:
        with autocast(a):
            out, _ = rnn(emb(inputs))
            loss = torch.nn.functional.cross_entropy(dec(out).flatten(0, 1), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.25)
        optimizer.step()

    try:
        step()
    except RuntimeError as e:
        print(f"torch.nn's step not timed: {str(e).splitlines()[0]}")
        return None
    return step


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
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    a = p.parse_args()
    torch.manual_seed(0)
    config = LMConfig(
        cell=a.cell, num_layers=a.layers, hidden_size=a.hidden, embedding_size=a.embedding
    )
    model = LanguageModel(config, a.vocab)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ids = torch.randint(0, a.vocab, (a.bptt + 1, a.batch))
    inputs, targets = ids[:-1], ids[1:].flatten()
    N, H, V = a.bptt * a.batch, a.hidden, a.vocab

    def whole_step() -> None:
        with autocast(a):
            loss, _ = model.loss(inputs, targets.view(a.bptt, a.batch))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()

    baseline_step = torch_nn_step(a, inputs, targets)
    x = model.embedding(inputs).detach().requires_grad_()  # type: ignore[misc]

    def recurrent() -> None:
        with autocast(a):
            out, _ = model.rnn(x)
        out.backward(torch.ones_like(out))

    h, w, b = torch.randn(N, H), model.decoder.weight.detach(), model.decoder.bias.detach()
    p = torch.randn(V, N)
    hg, wg, bg = (t.clone().requires_grad_() for t in (h, w, b))
    if a.precision == "bf16":  # the products' operands as bf16 autocast hands them over
        h, w, b, p = (t.to(torch.bfloat16) for t in (h, w, b, p))
    F = torch.nn.functional
    parts = {
        "whole training step": whole_step,
        **({"torch.nn whole training step (same run)": baseline_step} if baseline_step else {}),
        f"recurrent stack fwd+bwd ({a.layers}x{H} {a.cell})": recurrent,
        "(F.linear's layout: h W^T + b, [N, V])": lambda: torch.addmm(b, h, w.t()),
        "output layer: z^T = W h^T + b": lambda: torch.addmm(b[:, None], w, h.t()),
        "output layer: dL/dh = P^T W": lambda: p.t() @ w,
        "output layer: dL/dW = P h": lambda: p @ h,
        "output layer + loss fwd+bwd (projected_cross_entropy)": lambda: under(
            a, lambda: projected_cross_entropy(hg, wg, bg, targets)
        )().backward(),
        "torch.nn: F.linear + F.cross_entropy fwd+bwd": lambda: under(
            a, lambda: F.cross_entropy(F.linear(hg, wg, bg), targets)
        )().backward(),
    }
    print(
        f"{a.layers}x{H} {a.cell}, V={V}, batch {a.batch} x bptt {a.bptt} = {N} tokens per "
        f"step, {torch.get_num_threads()} threads, {a.precision}"
    )
    times = {name: median_ms(fn, a.repeats) for name, fn in parts.items()}
    # the two whole steps again, taking turns, for a ratio that one noisy minute cannot skew
    if baseline_step:
        (ours_ms, base_ms), _ = time_alternating([whole_step, baseline_step], a.repeats, 3)
    whole = times["whole training step"]
    for name, ms in times.items():
        print(f"{name:56s} {ms:8.2f} ms  {100 * ms / whole:5.1f}%")
    output_ms = sum(ms for name, ms in times.items() if name.startswith("output layer:"))
    flops = 3 * 2 * N * H * V
    print(
        f"output layer GEMMs: {output_ms:.2f} ms = {flops / output_ms / 1e6:.1f} GFLOP/s; "
        f"alone they allow at most {N / output_ms * 1e3:,.0f} tokens/s"
    )
    print(f"whole step: {N / whole * 1e3:,.0f} tokens/s")
    # Every 2-D weight of the stack (W_ih, W_hh, W_hr) and the output layer multiply each
    # token once forward and twice backward; the embedding is a lookup.
    weights = sum(w.numel() for w in model.rnn.parameters() if w.dim() == 2) + H * V
    token_flops = 3 * 2 * weights
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    peaks = {f"torch.mm {a.precision}": gemm_peak_gflops(2048, dtype, 5)}
    if a.precision == "fp32":
        peaks.update(library_peaks(2048, 5))
    source, peak = max(peaks.items(), key=lambda kv: kv[1])
    step_gflops = N / whole * 1e3 * token_flops / 1e9
    print(
        f"model GEMMs {token_flops / 1e6:.1f} MFLOP per token (forward + backward); GEMM peak "
        f"{peak:.1f} GFLOP/s ({source} at 2048^3, this run): at most "
        f"{peak * 1e9 / token_flops:,.0f} tokens/s at this size; the whole step runs at "
        f"{step_gflops:.1f} GFLOP/s, {100 * step_gflops / peak:.0f}% of that peak"
    )
    if baseline_step:
        print(
            f"alternating whole steps: rnnkit {N / ours_ms * 1e3:,.0f} tokens/s, torch.nn "
            f"{N / base_ms * 1e3:,.0f} tokens/s: {base_ms / ours_ms:.2f}x"
        )


if __name__ == "__main__":
    main()
