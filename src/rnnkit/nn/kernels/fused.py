"""Fused CPU kernels: one compiled forward and one compiled backward through time per layer.

What the kernel computes (``_fused_cpu.cpp``), for one layer and all of its directions,
the same results as ``rnnkit.nn.runner.run_layer`` (``tests/test_kernels.py``), for the
five classic cells, the LSTM with ``proj_size`` (h' = W_hr (o tanh c'): a second
product per step, h P wide), the two minimal ones (minGRU, minLSTM: no recurrent weight,
so no per-step product, only the element-wise loop; a [0, H] placeholder stands for W_hh)
and the two layer-normalised ones (lstm_ln, gru_ln: the input projection normalised
before the loop, LN(U h) and LN(c') inside it, their biases after the norms;
docs/cells.md):
  * the input projection of all T steps (with ``b_ih``) as one GEMM before the loop;
  * one gate-wide recurrent GEMM per step (two dependent ones for the reset-before GRU),
    accumulated in place into that step's projection (the reset-after GRU keeps U h apart:
    its n block is multiplied by r), through the BLAS torch ships (``sgemm_``/``dgemm_``);
  * the fp32 products (the projection and the per-step ones) in the library
    ``rnnkit.nn.kernels.gemm`` chose for the layer's shape on this machine;
  * fused element-wise gate math (adding ``b_hh``), which overwrites the projection with
    the gate activations backward needs (training) or nothing (inference: two state slots);
  * backward: the reverse loop does only the per-step ``dh @ U`` GEMM and the element-wise
    gate gradients; the weight and input gradients are a few large GEMMs over all T*B rows
    after the loop;
  * a bidirectional layer runs its two directions on two threads when one step's GEMM is
    too small to occupy the cores by itself;
  * variable lengths cost only their tokens: the rows are taken longest first, so each
    step's GEMM and gate loop cover only the rows still running, and the per-token
    buffers (gx, the saved gates, their gradients) are packed [N, G] over the N real
    tokens, so the big products before and after the loop skip the padding.

Saved for backward (per direction): the states entering and leaving every step
``[T+1, B, H]`` (rows longest first; and the LSTM's cells), the gate activations ``[N, G]``
(none for the RNN, whose derivative comes from its output), for the reset-after GRU
``U_n h + b_hn`` ``[N, H]`` and for the projected LSTM r = o tanh(c') ``[N, H]`` (its h
``[T+1, B, P]``). Nothing else: gx is overwritten in place.

Streaming: ``step`` is one inference step of one layer-direction (T = 1, a given state,
no grad) in one C++ call with its own matrix-vector products in the calling thread (on
bf16 copies of the weights under bf16 autocast); ``RNNBase._stream_step`` calls it.

Tracing: ``ops.py`` registers the layer forward, its backward and the step as
``torch.library`` custom operators with fake implementations and autograd, which
``torch.export`` and ``torch.compile`` trace as one node per call; eager calls reach the
same implementation without the dispatcher.

Building: the extension is compiled with ``torch.utils.cpp_extension.load`` on the first
supported call and cached in the torch extensions directory, keyed by the source, the
flags, the CPU and the torch version; ``compile_info()`` reports the load time and whether
it came from the cache. Fallback: if the extension cannot be built (no compiler, no
headers), ``supports`` answers False after one warning and every layer runs the composite
path.

Why C++ and not Numba, what bounds the speed, and what was tried: ``docs/kernels.md``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from rnnkit.common.io import atomic_write_bytes
from rnnkit.nn.cells import Cell, State
from rnnkit.nn.cells.layer_norm import LayerNormCell
from rnnkit.nn.kernels import memory, ops
from rnnkit.nn.kernels.precision import products

CELL_CODES = ops.CELL_CODES
_SOURCE = Path(__file__).with_name("_fused_cpu.cpp")
_FLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp",
    "-fno-math-errno",
    "-fno-trapping-math",  # lets the clamps in fast_exp if-convert, so the gate loops vectorise
    "-ffp-contract=fast",
]

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_module: ModuleType | None = None
_error: str | None = None
_info: dict[str, Any] = {}


def _extension_name() -> str:
    """Unique per source, flags, CPU and torch: ``-march=native`` code must not cross
    machines, and a module built against one torch's headers must not load in another."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    key = _SOURCE.read_text() + " ".join(_FLAGS) + cpu + torch.__version__
    key = hashlib.sha1(key.encode()).hexdigest()
    return f"rnnkit_fused_cpu_{key[:12]}"


def load() -> ModuleType | None:
    """The compiled module (built on first use, then from the cache), or None if it fails."""
    global _module, _error
    if _module is not None or _error is not None:
        return _module
    with _lock:
        if _module is not None or _error is not None:
            return _module
        start = time.perf_counter()
        try:
            from torch.utils import cpp_extension

            name = _extension_name()
            build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
            # Build from a copy inside the build directory: torch rebuilds when a source's
            # path changes, so compiling from the checkout would rebuild (and make two
            # checkouts rebuild each other) although the name already pins the content.
            source = build_dir / _SOURCE.name
            if not source.is_file() or source.read_bytes() != _SOURCE.read_bytes():
                atomic_write_bytes(source, _SOURCE.read_bytes())
            cached = (build_dir / f"{name}.so").exists()
            if not cached:
                _log.warning("rnnkit: compiling the fused CPU kernels (once per machine, ~1 min)")
            module = cpp_extension.load(
                name=name,
                sources=[str(source)],
                build_directory=str(build_dir),
                extra_cflags=_FLAGS,
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as exc:  # any build failure means "fall back", never a crash
            _error = f"{type(exc).__name__}: {exc}".strip()
            warnings.warn(
                "rnnkit: the fused CPU kernels could not be compiled, so every layer uses "
                f"the composite path (slower). Reason: {_error.splitlines()[0][:300]}",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        _info.update(seconds=time.perf_counter() - start, cached=cached, name=name)
        _info.update(keeps_freed_memory=memory.keep_freed_memory())
        _info["build_dir"] = str(build_dir)
        _module = module
        return module


def compile_info() -> dict[str, Any]:
    """How the extension was obtained in this process: ``seconds`` (load time), ``cached``
    (True if the compiled module was already on disk), ``name``, ``build_dir``,
    ``keeps_freed_memory`` (``memory.keep_freed_memory``); or
    ``error``. Loads it if that has not happened yet."""
    load()
    return dict(_info) if _error is None else {"error": _error}


def supports(cell: Cell, x: Tensor) -> bool:
    """CPU fp32/fp64 inputs of the five classic cells (the LSTM also with ``proj_size``),
    of the two minimal cells (minGRU, minLSTM) and of the two layer-normalised ones
    (lstm_ln, gru_ln), where the extension builds."""
    if not x.is_cpu or x.dtype not in (torch.float32, torch.float64):
        return False
    if cell.name not in CELL_CODES:
        return False
    return _builds()


def recurrent_weight(w_ih: Tensor, w_hh: Tensor | None, H: int) -> Tensor:
    """w_hh, or for a cell without one (minGRU, minLSTM) the extension's [0, H] placeholder
    in w_ih's dtype: the extension reads H from it and runs no per-step product."""
    return w_ih.new_empty(0, H) if w_hh is None else w_hh


@torch.compiler.assume_constant_result  # traced code asks once, at trace time
def _builds() -> bool:
    return load() is not None


def run_layer(
    cell: Cell,
    x: Tensor,
    lengths: Tensor | None,
    states: list[State],
    weights: list,
    noise: Sequence[Any] | None = None,
) -> tuple[Tensor, list[State]]:
    """``rnnkit.nn.runner.run_layer``'s contract, fused: x [T, B, D] -> (out [T, B, dirs*H],
    final states per direction). Differentiable w.r.t. x, states and weights. ``noise``:
    one ``rnnkit.nn.noise.StepNoise`` (or None) per direction: recurrent dropout and
    zoneout inside the time loop, as the composite runner applies them."""
    code = CELL_CODES[cell.name]
    # (The projected LSTM's products stay in x's dtype under bf16 autocast, as on its
    # composite path, which the layer also runs with autocast off.)
    bf16 = products() == torch.bfloat16 and x.dtype == torch.float32 and not cell.proj_size
    dirs, n_states = len(weights), cell.num_states
    # The normed cells' weights: (w_ih, w_hh, None, None, b_ih, b_hh, g_ih, g_hh[, g_c,
    # b_c]) (LayerNormCell.direction_weights): their biases follow the norms.
    normed = isinstance(cell, LayerNormCell)
    bias_at = 4 if normed else 2
    biases: list[list[Tensor]] = [[], []]
    for k in (0, 1):  # a layer has every bias or none
        given = [w[bias_at + k] for w in weights if w[bias_at + k] is not None]
        if given and len(given) != dirs:
            raise ValueError("the fused kernel needs a bias in every direction or in none")
        biases[k] = given
    none = x.new_empty(0)  # an absent norm parameter, in the layer's dtype (its gradient's)
    if normed:
        norms = [none if t is None else t for w in weights for t in _norms(w)]
    else:  # the projected LSTM's (w_ih, w_hh, b_ih, b_hh, w_hr): W_hr in the extra argument
        norms = [w[4] for w in weights] if cell.proj_size else []
    h0 = [s[0] for s in states]
    c0 = [s[1] for s in states] if n_states == 2 else []
    w_ih = [w[0] for w in weights]
    w_hh = [recurrent_weight(w[0], w[1], h.shape[-1]) for w, h in zip(weights, h0, strict=True)]
    tensors = (x, *h0, *c0, *w_ih, *w_hh, *biases[0], *biases[1], *norms)
    training = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    flat = _flat_noise(noise, n_states)
    res = ops.layer(
        code, x, lengths, h0, c0, w_ih, w_hh, biases[0], biases[1], norms, flat, training, bf16
    )
    finals = [tuple(res[1 + d * n_states : 1 + (d + 1) * n_states]) for d in range(dirs)]
    return res[0], finals


_NONE = torch.empty(0)  # an absent bias or cell state (the extension reads numel() only)


def _norms(weights: tuple) -> tuple[Tensor | None, ...]:
    """A normed cell's (g_ih, g_hh, g_c, b_c) from its direction weights (None where the
    cell or the layer has none: gru_ln's g_c and b_c, b_c without bias)."""
    extra = weights[6:]
    return (*extra, None, None, None, None)[:4]


def _flat_noise(noise: Sequence[Any] | None, n_states: int) -> list[Tensor]:
    """StepNoise per direction -> the extension's list: per direction the recurrent mask
    [B, R], then the zoneout keep-masks of h and c ([T, B, R] and [T, B, H], R = h's width,
    or one value where the mask is evaluation's expanded constant), ``_NONE`` where off;
    [] without noise."""
    if noise is None or all(n is None for n in noise):
        return []
    flat: list[Tensor] = []
    for n in noise:
        recurrent = None if n is None else n.recurrent
        zoneout = () if n is None or n.zoneout is None else tuple(n.zoneout)  # per state
        flat.append(_NONE if recurrent is None else recurrent)
        for s in range(2):  # h, then c (none for a cell without one)
            k = zoneout[s] if s < min(n_states, len(zoneout)) else None
            if k is None:
                flat.append(_NONE)
            elif all(stride == 0 for stride in k.stride()):  # the constant p, expanded
                flat.append(k[0, 0, :1].contiguous())
            else:
                flat.append(k)
    return flat


def step(
    cell: Cell,
    x: Tensor,
    state: State,
    weights: tuple,
    *,
    y_bf16: bool = False,
    state_bf16: bool = False,
) -> tuple[Tensor, State]:
    """One inference step of one layer-direction, for streaming (T = 1, a given state): x
    [1, B, D] (or anything holding B contiguous rows of D), state (h,) or (h, c), each
    [1, B, H] or [B, H], weights (w_ih, w_hh, b_ih, b_hh) -> (output [1, B, H], new state,
    each [1, B, H]). No autograd: callers use it under ``torch.no_grad()`` only.

    bf16 weights (copies of fp32 ones) make the two products bf16 with fp32 accumulation
    (x and h rounded to bf16), as the whole-layer kernel under bf16 autocast; x and the
    states may then be bf16 too. The gates and states compute in fp32 (fp64 for fp64
    weights); ``y_bf16``/``state_bf16`` return the output/new states rounded to bf16."""
    if isinstance(cell, LayerNormCell) or cell.proj_size:  # no compiled step: the cell's own
        return _composite_step(cell, x, state, weights, y_bf16, state_bf16)
    w_ih, w_hh, b_ih, b_hh = weights
    w_hh = recurrent_weight(w_ih, w_hh, state[0].shape[-1])
    code, c = CELL_CODES[cell.name], state[1] if len(state) == 2 else None
    if torch.compiler.is_compiling():  # traced: the custom operator, opaque to the tracer
        y, h, c = ops.fused_step(code, x, state[0], c, w_ih, w_hh, b_ih, b_hh, y_bf16, state_bf16)
    else:  # eager: straight into the extension, without the dispatcher's ~20 us a call
        ext = _module if _module is not None else load()
        assert ext is not None
        y, h, c = ext.step(
            code,
            x,
            state[0],
            _NONE if c is None else c,
            w_ih,
            w_hh,
            _NONE if b_ih is None else b_ih,
            _NONE if b_hh is None else b_hh,
            y_bf16,
            state_bf16,
        )
    return y, ((h, c) if len(state) == 2 else (h,))


def _composite_step(
    cell: Cell, x: Tensor, state: State, weights: tuple, y_bf16: bool, state_bf16: bool
) -> tuple[Tensor, State]:
    """``step``'s contract by the cell's composite step (the layer-normalised cells, whose
    biases are among the extra parameters, and the projected LSTM, whose h is P wide): bf16
    weight copies make the input and recurrent products bf16 (results widened), as the
    compiled step's; the norms and gates compute in fp32 (fp64 for fp64 weights)."""
    w_ih, w_hh, b_ih, b_hh, *extra = weights
    compute = torch.float32 if w_ih.dtype == torch.bfloat16 else w_ih.dtype
    B = state[0].numel() // state[0].shape[-1]  # (x may be [B, 1, D]: B rows either way)
    x2 = x.reshape(B, x.shape[-1])
    hs = tuple(s.reshape(B, s.shape[-1]).to(compute) for s in state)
    if w_ih.dtype == torch.bfloat16:  # products of bf16-rounded operands, fp32 sums
        gx = torch.nn.functional.linear(x2.to(torch.bfloat16).to(compute), w_ih.to(compute))
        h_in = hs[0].to(torch.bfloat16).to(compute)
        w_hh_c = w_hh.to(compute)
    else:
        gx = torch.nn.functional.linear(x2.to(compute), w_ih)
        h_in, w_hh_c = None, w_hh
    if b_ih is not None:
        gx = gx + b_ih.to(compute)
    params = [None if t is None else t.to(compute) for t in (b_hh, *extra)]
    new = cell.step(gx, hs, w_hh_c, *params, h_in=h_in)
    y = new[0].to(torch.bfloat16) if y_bf16 else new[0]
    kept = tuple(n.to(torch.bfloat16) if state_bf16 else n.clone() for n in new)
    return y.view(1, B, -1), tuple(k.view(1, B, -1) for k in kept)
