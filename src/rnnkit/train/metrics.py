"""The run's record: a JSONL metrics log and a loss-curve PNG.

``metrics.jsonl`` holds one JSON object per line: ``{"kind": "train", "step", "epoch",
"loss", "grad_norm", "clipped", "lr", "tokens_per_s"}`` for every optimiser step (the
gradient norm is measured before clipping) and ``{"kind": "valid", "step", "epoch",
"loss", ...}`` after each validation. A run of several processes (torchrun) adds
``world_size`` to each record, and ``allreduce_s`` (the seconds rank 0 spent in the step's
gradient all-reduce, waiting for the slowest rank included) to each step's; its loss and
``tokens_per_s`` are those of the global batch, every rank counted. On resume the log
is cut back to the checkpoint's step, so it reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from rnnkit.common.io import atomic_savefig, atomic_write_text, open_log


class MetricsLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = open_log(self.path)

    def write(self, record: dict[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        self._file.write(json.dumps(clean) + "\n")

    def flush(self, sync: bool = False) -> None:
        """Hand the records to the OS; ``sync``: and wait until they are on disk."""
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    @staticmethod
    def truncate(path: str | Path, step: int) -> None:
        """Drop records after ``step`` (written by a run that died after its last checkpoint).
        The file is replaced atomically, so no ``MetricsLog`` may hold it open meanwhile."""
        path = Path(path)
        if path.is_file():
            keep = [line for line in read(path, raw=True) if line["step"] <= step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def read(path: str | Path, raw: bool = False) -> list[dict[str, Any]]:
    """Every record of a metrics log (a torn last line from a crash is skipped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot(log_path: str | Path, png_path: str | Path, unit: str = "nats per token") -> None:
    """Training loss (a moving average over steps) and validation loss against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read(log_path)
    train = [(r["step"], r["loss"]) for r in records if r["kind"] == "train" and r["loss"]]
    valid = [(r["step"], r["loss"]) for r in records if r["kind"] == "valid" and r["loss"]]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    if train:
        steps, losses = zip(*train, strict=True)
        window = max(1, len(losses) // 50)
        smooth, total = [], 0.0
        for i, loss in enumerate(losses):  # trailing moving average over `window` steps
            total += loss - (losses[i - window] if i >= window else 0.0)
            smooth.append(total / min(i + 1, window))
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
        ax.plot(steps, smooth, color="tab:blue", label="train")
    if valid:
        steps, losses = zip(*valid, strict=True)
        ax.plot(steps, losses, "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss ({unit})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_savefig(fig, png_path)
    plt.close(fig)
