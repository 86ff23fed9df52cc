"""Latency of an exported model in ONNX Runtime against rnnkit, one thread each, in one
process: one language-model generation step (ids [1] and the carried state in, logits
and state out), the same step of its recurrent layers alone, and one classifier call.

    OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/onnx_latency.py

rnnkit runs its own inference path: the LM step is ``LanguageModel.forward`` at T = 1
with the state carried under ``no_grad``, which takes the layers' streaming fast path
(``RNNBase._stream_step``, docs/benchmarks.md "stream"), timed alone as "layers only"
(a layer call at T = 1, the exported layer graph in ONNX Runtime); the classifier is
``Classifier.forward``. ONNX Runtime runs the files ``rnnkit.export.to_onnx`` writes,
with ``intra_op_num_threads = inter_op_num_threads = 1`` on the CPU provider. Each figure
is the median over blocks of each block's mean; the two alternate block by block so that
the noise of a shared machine falls on both alike. Results and the command: docs/export.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from rnnkit.export import onnx_model
from rnnkit.nn.factory import recurrent_layer
from rnnkit.tasks.classify.config import ClassifierConfig
from rnnkit.tasks.classify.model import Classifier
from rnnkit.tasks.lm.config import LMConfig
from rnnkit.tasks.lm.model import LanguageModel


def session(module: torch.nn.Module, example: Any = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    model = onnx_model(module, example).SerializeToString()
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def block_means(runs: dict[str, Callable[[], object]], blocks: int, calls: int) -> dict[str, float]:
    """{name: median over ``blocks`` of the mean µs per call}, alternating by block."""
    for run in runs.values():  # warm-up: first-use costs out of the timing
        for _ in range(max(calls // 4, 5)):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(blocks):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(calls):
                run()
            samples[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: statistics.median(s) for name, s in samples.items()}


def lm_step(cell: str, vocab: int, blocks: int, calls: int) -> dict[str, float]:
    torch.manual_seed(0)
    config = LMConfig(cell=cell, num_layers=2, hidden_size=256, embedding_size=128)
    model = LanguageModel(config, vocab).eval()
    s = session(model)
    names = [i.name for i in s.get_inputs()[1:]]
    token = torch.tensor([[5]])  # [T=1, B=1]
    carried: dict[str, object] = {
        "torch": None,
        "ort": {n: np.zeros((2, 1, 256), np.float32) for n in names},
    }

    def ours() -> None:
        with torch.no_grad():
            _, carried["torch"] = model(token, carried["torch"])

    ids = np.array([5], dtype=np.int64)

    def theirs() -> None:
        states = carried["ort"]
        assert isinstance(states, dict)
        _, *new = s.run(None, {"ids": ids} | states)
        carried["ort"] = dict(zip(names, new, strict=True))

    return block_means({"rnnkit": ours, "onnxruntime": theirs}, blocks, calls)


def layer_step(cell: str, blocks: int, calls: int) -> dict[str, float]:
    """The recurrent stack alone: 2 layers, D = H = 256, B = 1, T = 1, state carried."""
    torch.manual_seed(0)
    layer = recurrent_layer(cell, 256, 256, 2).eval()
    x, state0 = torch.randn(1, 1, 256), torch.zeros(2, 1, 256)
    hx = (state0, state0) if cell == "lstm" else state0
    s = session(layer, {"input": x, "hx": hx})
    names = [i.name for i in s.get_inputs()[1:]]
    carried: dict[str, Any] = {"torch": hx, "ort": {n: state0.numpy() for n in names}}

    def ours() -> None:
        with torch.no_grad():
            _, carried["torch"] = layer(x, carried["torch"])

    feed = {"input": x.numpy()}

    def theirs() -> None:
        _, *new = s.run(None, feed | carried["ort"])
        carried["ort"] = dict(zip(names, new, strict=True))

    return block_means({"rnnkit": ours, "onnxruntime": theirs}, blocks, calls)


def classifier_call(B: int, T: int, blocks: int, calls: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = Classifier(ClassifierConfig(), 20_000, 2).eval()  # 1x150 BiLSTM, 300-d, max pooling
    s = session(model)
    ids = torch.randint(1, 20_000, (B, T))
    lengths = torch.full((B,), T)
    feed = {"ids": ids.numpy(), "lengths": lengths.numpy()}

    def ours() -> None:
        with torch.no_grad():
            model(ids, lengths)

    return block_means({"rnnkit": ours, "onnxruntime": lambda: s.run(None, feed)}, blocks, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=7, help="timed blocks per figure")
    parser.add_argument("--calls", type=int, default=200, help="calls per block (steps)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, 1 thread each")
    print(f"median of {args.blocks} blocks, µs per call (rnnkit / onnxruntime)")
    for cell in ("gru", "lstm"):
        t = lm_step(cell, 100, args.blocks, args.calls)
        print(
            f"LM step, 2x256 {cell:<4}, V=100, B=1: {t['rnnkit']:8.1f} / {t['onnxruntime']:8.1f}"
            f"  ({t['rnnkit'] / t['onnxruntime']:.2f}x)"
        )
    for cell in ("gru", "lstm"):
        t = layer_step(cell, args.blocks, args.calls)
        print(
            f"layers only, 2x256 {cell:<4}, B=1, T=1: {t['rnnkit']:8.1f} / "
            f"{t['onnxruntime']:8.1f}  ({t['rnnkit'] / t['onnxruntime']:.2f}x)"
        )
    for B, T in ((1, 20), (32, 20)):
        t = classifier_call(B, T, args.blocks, max(args.calls // (4 * B) + 5, 10))
        print(
            f"classifier, 1x150 BiLSTM, max pool, B={B}, T={T}: {t['rnnkit']:8.1f} / "
            f"{t['onnxruntime']:8.1f}  ({t['rnnkit'] / t['onnxruntime']:.2f}x)"
        )


if __name__ == "__main__":
    main()
