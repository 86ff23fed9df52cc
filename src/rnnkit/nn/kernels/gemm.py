"""Which library runs the fused kernel's fp32 products, chosen by timing them on this machine.

Candidates (``_fused_cpu.cpp``, next to ``gemm<S>()``):
    "mkl"     MKL's ``sgemm_`` as libtorch_cpu exports it, called from the time loop (the
              default, and the reference the others must beat).
    "onednn"  oneDNN's matmul through ATen (``mkldnn::_linear_pointwise``): the per-step
              products on a packed copy of the recurrent weights, made once per layer call;
              the input projection and the input gradient dx unpacked (the weight
              gradients are ``at::mm`` under every library: oneDNN pays two transposing
              copies for them).
    "aten"    ``at::addmm`` on views of the same memory (whatever BLAS this torch dispatches
              to); always available, so it is the fallback of last resort.

fp64 always runs MKL's ``dgemm_`` (or ATen where it is missing), bf16 autocast oneDNN's
bf16 products (through ATen); only fp32 is chosen.

The choice, ``choose(B, G, H)`` for a layer of batch B, G gate rows and H hidden units:
    1. ``RNNKIT_GEMM=mkl|onednn|aten`` forces one (an unknown or unavailable name is an
       error naming it and the choices); it is read at the first choice of a process;
    2. else the shape is bucketed (each of B, G, H rounded up to a power of two) and the
       bucket's choice is read from the cache file, ``$RNNKIT_CACHE_DIR/gemm.json`` or
       ``~/.cache/rnnkit/gemm.json``, under this machine's key (CPU model and flags,
       torch version, thread count);
    3. else the bucket is probed: each available candidate runs what one direction of a
       training layer call does (``gemm_time``: the input projection, the per-step
       products on one weight, a weight gradient), rounds interleaved, and the fastest
       wins. Each product's fastest time across the rounds is taken (not a median: on a
       shared machine other processes only ever add time, and one product takes micro- to
       milliseconds, so some run undisturbed even when no whole round does), and the round
       is scaled to a layer of ``LAYER_STEPS`` steps, with the packing of the first step
       counted once, as a layer call pays it. A candidate other than "mkl" must beat
       it by ``MARGIN``, so noise does not flip the choice. The probe runs under a file
       lock and is written atomically, so concurrent processes (ranks) agree, and once
       written it is never re-timed: every run on the machine makes the same choice. An
       unreadable or corrupt cache is ignored and re-probed, never an error.

``chosen()`` reports what this process chose and ``peaks(n)`` times every candidate on an
n^3 product, for ``rnnkit bench``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rnnkit.common.io import atomic_write_text

CANDIDATES = ("mkl", "onednn", "aten")
DEFAULT = "mkl"
FALLBACK = "aten"
ENV = "RNNKIT_GEMM"
MARGIN = 0.05
"""a candidate replaces the default only if its fastest round is this much faster"""
ROUNDS = 5
"""timed rounds per candidate (after one untimed), interleaved across candidates"""
ROUND_FLOPS = 3e8
"""about this many FLOPs per round (4 to 32 steps), so a round takes milliseconds"""
LAYER_STEPS = 64
"""the sequence length the probe's estimate is for (a round runs fewer steps)"""
PROBE_SECONDS = 1.0
"""after this long a probe stops at the end of a round, once each candidate has two"""
_CACHE_VERSION = 1

_lock = threading.Lock()
_choices: dict[tuple[int, ...], str] = {}  # (bucket, threads) -> name
_by_shape: dict[tuple[int, ...], str] = {}  # (B, G, H, threads) -> name: the per-call path
_forced: list[str | None] = []  # RNNKIT_GEMM as read at the first choice; forget() rereads
_timings: dict[tuple[int, ...], dict[str, float]] = {}
probes = 0
"""how many buckets this process has timed (tests check that the cache is reused)"""


def _ext() -> Any:
    from rnnkit.nn.kernels import fused

    ext = fused.load()
    if ext is None:
        raise RuntimeError("the fused CPU kernels are not available, so there is no GEMM to choose")
    return ext


def available(name: str) -> bool:
    """Whether candidate ``name`` can run here (its library and symbols are present)."""
    return bool(_ext().gemm_available(name))


def _override() -> str | None:
    """``RNNKIT_GEMM``, checked; read once per process (like ``RNNKIT_BACKEND``): a layer
    call asks for every step of a stream."""
    if _forced:
        return _forced[0]
    name = os.environ.get(ENV, "").strip()
    if not name:
        _forced.append(None)
        return None
    if name not in CANDIDATES:
        raise ValueError(f"{ENV} must be one of {', '.join(CANDIDATES)}, got {name!r}")
    if not available(name):
        raise ValueError(f"{ENV}={name} names a GEMM library that is not available here")
    _forced.append(name)
    return name


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def bucket(B: int, G: int, H: int) -> tuple[int, int, int]:
    """The probed shape for a layer: B, G, H each rounded up to a power of two."""
    return _pow2(B), _pow2(G), _pow2(H)


def machine_key() -> str:
    """What a choice is valid for: the CPU (model and flags), the torch and the threads."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))]
        cpu = "".join(sorted(set(lines)))
    except OSError:
        pass
    text = f"{cpu}|{platform.machine()}|torch {torch.__version__}|{torch.get_num_threads()}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cache_path() -> Path:
    root = os.environ.get("RNNKIT_CACHE_DIR") or Path.home() / ".cache" / "rnnkit"
    return Path(root) / "gemm.json"


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache's contents, or an empty one if it is missing, unreadable or corrupt."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"version": _CACHE_VERSION, "machines": {}}
    if (
        not isinstance(data, dict)
        or data.get("version") != _CACHE_VERSION
        or not isinstance(data.get("machines"), dict)
    ):
        return {"version": _CACHE_VERSION, "machines": {}}
    return data


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside the cache, so concurrent processes probe a bucket once;
    without a writable directory there is no cache and no lock."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def probe_steps(M: int, N: int, K: int) -> int:
    """Steps per probe round: a round is 6 M N K FLOPs per step (projection, product and
    weight gradient)."""
    return int(min(32, max(4, ROUND_FLOPS // (6 * M * N * K))))


def probe(
    M: int,
    N: int,
    K: int,
    candidates: tuple[str, ...] = CANDIDATES,
    rounds: int = ROUNDS,
    budget: float = PROBE_SECONDS,
) -> dict[str, float]:
    """Estimated seconds of one direction of a ``LAYER_STEPS``-step training call per
    available candidate at M batch rows, N gate rows, K hidden units, from rounds of
    ``gemm_time`` (see ``layer_seconds``). A missing candidate is left out. At most
    ``rounds`` timed rounds each, fewer (at least two) past ``budget`` seconds."""
    global probes
    ext = _ext()
    names = [c for c in candidates if available(c)]
    steps = probe_steps(M, N, K)
    times: dict[str, list[list[float]]] = {c: [] for c in names}
    deadline = time.perf_counter() + budget
    for r in range(max(1, rounds) + 1):
        for c in names:
            seconds = ext.gemm_time(c, M, N, K, steps)
            if r > 0:  # the first round warms caches, thread pools and oneDNN's primitives
                times[c].append(seconds)
        if r >= 2 and time.perf_counter() > deadline:
            break
    probes += 1
    return {c: layer_seconds([min(p) for p in zip(*t, strict=True)]) for c, t in times.items()}


def layer_seconds(best: list[float]) -> float:
    """A ``LAYER_STEPS``-step layer direction's seconds from the fastest time of each product
    of a round of s steps, [projection, step 1 (with the packing), steps 2..s, weight
    gradient]: the projection, the steps and the gradient scale with the length; the
    packing, step 1 less a later step, does not."""
    projection, first, rest, gradient = best[0], best[1], best[2:-1], best[-1]
    step = sum(rest) / len(rest) if rest else first
    steps = len(best) - 2
    return LAYER_STEPS / steps * (projection + steps * step + gradient) + max(0.0, first - step)


def pick(seconds: dict[str, float]) -> str:
    """The fastest; the default unless another beats it by ``MARGIN``; "aten" when nothing
    else ran."""
    if not seconds:
        return FALLBACK
    best = min(seconds, key=lambda c: seconds[c])
    if DEFAULT in seconds and seconds[best] > (1 - MARGIN) * seconds[DEFAULT]:
        return DEFAULT
    return best


def choose(B: int, G: int, H: int) -> str:
    """The library for a layer's fp32 products at batch B, G gate rows, H hidden units."""
    forced = _override()
    if forced is not None:
        return forced
    threads = torch.get_num_threads()  # part of the machine key: a choice per thread count
    name = _by_shape.get((B, G, H, threads))
    if name is not None:
        return name
    key = bucket(B, G, H)
    full = (*key, threads)
    with _lock:
        if full not in _choices:
            _choices[full] = _cached_or_probed(key)
        _by_shape[B, G, H, threads] = _choices[full]
        return _choices[full]


def _cached_or_probed(key: tuple[int, int, int]) -> str:
    path, machine, entry = cache_path(), machine_key(), "x".join(map(str, key))
    with _file_lock(path):
        data = _read_cache(path)
        mine = data["machines"].get(machine)
        if not isinstance(mine, dict):
            mine = data["machines"][machine] = {}
        known = mine.get(entry)
        if isinstance(known, dict) and known.get("choice") in CANDIDATES:
            if available(known["choice"]):
                return str(known["choice"])
        seconds = probe(*key)
        _timings[(*key, torch.get_num_threads())] = seconds
        name = pick(seconds)
        mine[entry] = {"choice": name, "seconds": seconds}
        with contextlib.suppress(OSError):  # no writable cache: choose again next process
            atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))
        return name


def peaks(n: int, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of each available candidate on [n, n] x [n, n] products along the kernel's
    own path (``gemm_time`` with one step: the input projection, one recurrent product with
    its packing, a weight gradient), median of ``repeats`` interleaved rounds after one
    untimed."""
    ext = _ext()
    names = [c for c in CANDIDATES if available(c)]
    rounds: dict[str, list[float]] = {c: [] for c in names}
    for r in range(max(1, repeats) + 1):
        for c in names:
            seconds = sum(ext.gemm_time(c, n, n, n, 1))
            if r > 0:
                rounds[c].append(seconds)
    return {c: 6 * n**3 / statistics.median(t) / 1e9 for c, t in rounds.items()}


def chosen() -> dict[str, Any]:
    """What this process chose: ``override`` (the ``RNNKIT_GEMM`` value or None), ``buckets``
    ({"BxGxH@threads": name}), ``probed`` (the probe's seconds per bucket timed in this
    process), ``cache``."""
    return {
        "override": _forced[0] if _forced else os.environ.get(ENV) or None,
        "buckets": {"{}x{}x{}@{}".format(*k): v for k, v in sorted(_choices.items())},
        "probed": {"{}x{}x{}@{}".format(*k): v for k, v in sorted(_timings.items())},
        "cache": str(cache_path()),
    }


def forget() -> None:
    """Drop this process's choices and its reading of ``RNNKIT_GEMM`` (tests; a changed
    ``RNNKIT_CACHE_DIR`` or ``RNNKIT_GEMM``)."""
    global probes
    with _lock:
        _choices.clear()
        _by_shape.clear()
        _forced.clear()
        _timings.clear()
        probes = 0
