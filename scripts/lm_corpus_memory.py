"""Peak resident memory of `rnnkit train lm` on a big text, per character of text.

    PYTHONPATH=src nice python scripts/lm_corpus_memory.py --mb 1000

Writes a random text of --mb megabytes (ASCII letters, spaces, line ends: a character
vocabulary under 256, so 1-byte ids) to a folder under /tmp, and trains a tiny character
model on it for a few steps in a child process, and the same on a 64 kB text of the same
kind before and after. The figure is the big run's peak RSS minus the smaller of the two
tiny runs' (the first may compile the fused kernels), divided by the big text's
characters: what the corpus costs, with the interpreter, torch and the model taken out.
Each run reports its own peak, ``getrusage(RUSAGE_SELF).ru_maxrss`` at exit (RLIMIT_AS
cannot bound a process that imports torch); the children's maximum that ``wait4`` gives
also counts the processes a run starts (torch's extension loader runs ninja), and varied
by 0.13 GB between identical tiny runs here.
Prints one JSON line; deletes the folder unless --keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# 52 letters, 10 spaces and 2 line ends: words of about 5 letters, lines of ~30 words.
ALPHABET = np.frombuffer(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" + b" " * 10 + b"\n" * 2, np.uint8
)
TINY_BYTES = 1 << 16
BLOCK = 1 << 24


def write_text(path: Path, size: int, seed: int = 0) -> None:
    """``size`` random bytes from ALPHABET, written a block at a time."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(BLOCK, left)
            ALPHABET[rng.integers(0, len(ALPHABET), n)].tofile(f)
            left -= n


# `python -m rnnkit ARGS` that writes its own peak RSS (KiB on Linux) to argv[1] at exit.
RNNKIT_REPORTING_PEAK = """
import atexit, resource, runpy, sys
out = sys.argv[1]
def record():
    with open(out, "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
atexit.register(record)
sys.argv = ["rnnkit", *sys.argv[2:]]
runpy.run_module("rnnkit", run_name="__main__", alter_sys=True)
"""


def peak_rss(args: list[str], log: Path) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of ``python -m rnnkit ARGS`` in a child process."""
    peak = log.with_suffix(".peak")
    command = [sys.executable, "-c", RNNKIT_REPORTING_PEAK, str(peak), *args]
    started = time.perf_counter()
    with open(log, "wb") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"rnnkit {' '.join(args)} failed ({code}); see {log}")
    return int(peak.read_text()) * 1024, time.perf_counter() - started


def train_command(text: Path, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        "train", "lm",
        "--data.text", str(text),
        "--data.valid_fraction", str(args.valid_fraction),
        "--data.batch_size", "8", "--data.bptt", "16", "--data.eval_batch_size", "8",
        "--model.hidden_size", "16", "--model.num_layers", "1",
        "--model.embedding_size", "8",
        "--trainer.max_steps", str(args.steps), "--trainer.progress", "false",
        "--trainer.threads", "1", "--trainer.out", str(out), "--samples", "0",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=1000, help="text size in 10^6 bytes")
    parser.add_argument("--steps", type=int, default=3, help="training steps")
    parser.add_argument(
        "--valid-fraction",
        type=float,
        default=0.001,
        help="held-out tail; the validation pass reads all of it",
    )
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the texts and runs")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="rnnkit-memory-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        big, tiny = work / "big.txt", work / "tiny.txt"
        chars = int(args.mb * 1e6)
        write_text(big, chars)
        write_text(tiny, TINY_BYTES)
        before, base_s = peak_rss(train_command(tiny, work / "run-tiny", args), work / "t.log")
        peak, peak_s = peak_rss(train_command(big, work / "run-big", args), work / "big.log")
        after, _ = peak_rss(train_command(tiny, work / "run-tiny", args), work / "t2.log")
        base = min(before, after)
        cache = work / "run-big" / "cache" / "train.ids"
        print(
            json.dumps(
                {
                    "chars": chars,
                    "peak_rss_mb": round(peak / 1e6, 1),
                    "baseline_rss_mb": round(base / 1e6, 1),
                    "bytes_per_char": round((peak - base) / chars, 4),
                    "cache_bytes_per_char": round(cache.stat().st_size / chars, 4),
                    "seconds": round(peak_s, 1),
                    "baseline_seconds": round(base_s, 1),
                }
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
