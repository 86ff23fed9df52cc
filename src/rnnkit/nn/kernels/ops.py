"""The fused CPU kernels as ``torch.library`` custom operators, so that ``torch.export``
and ``torch.compile`` see each layer call as one opaque node instead of tracing into the
compiled extension (whose data pointers fake tensors do not have).

    rnnkit::fused_layer(cell, x, lengths?, h0[], c0[], w_ih[], w_hh[], b_ih[], b_hh[],
                        norms[], noise[], training, bf16) -> [out, finals..., saved...]
    rnnkit::fused_layer_backward(cell, x, lengths?, dout, dh[], dc[], saved[], norms[],
                                 noise[], w_ih[], w_hh[], has_b_ih, has_b_hh, need_dx, bf16)
                                 -> [grads...]
    rnnkit::fused_step(cell, x, h, c?, w_ih, w_hh, b_ih?, b_hh?, y_bf16, state_bf16)
                       -> (y, h', c')

One list entry per direction (forward, then reverse); ``c0``/``dc`` are empty for cells
with one state, ``b_ih``/``b_hh`` empty for a layer without biases. ``norms`` holds the
cell's further parameters: for the layer-normalised cells (lstm_ln, gru_ln) per direction
their g_ih [G], g_hh [G], g_c [H], b_c [H] (an empty tensor where the cell or the layer
has none: gru_ln's g_c and b_c, b_c without bias), with ``b_ih``/``b_hh`` the biases
added after LN(x W_ih^T) and LN(U h); for the LSTM with ``proj_size`` P per direction
W_hr [P, H]; empty otherwise. ``noise`` is empty,
or holds per direction the per-step regulariser noise (``rnnkit.nn.noise.StepNoise``):
the recurrent-dropout mask [B, R], then the zoneout keep-masks of h [T, B, R] and of c
[T, B, H], each or one value (evaluation's constant), an empty tensor where one is off.
The shapes (T, B, D, H, G = gates * H; R = h's width: H, or P with W_hr):

    fused_layer     out [T, B, dirs*R]; per direction h_T [B, R] (, c_T [B, H]); when
                    training, per direction the buffers backward reads: the states
                    entering and leaving every step [T+1, B, R] (and the LSTM's cells
                    [T+1, B, H]), the gate activations [T*B, G] (the RNN's under zoneout
                    only), the reset-after GRU's U_n h + b_hn [T*B, H] (gru_ln: LN(U h)'s
                    n block), under recurrent dropout the masked h the products read
                    [T*B, R], for the normed cells the normalised x W_ih^T, U h (and c')
                    with their statistics [T*B, 2G (+ H) + 3], and for the projected LSTM
                    r = o tanh(c') [T*B, H]
    fused_layer_backward  dx [T, B, D] (if need_dx); per direction dh0 [B, R] (, dc0
                    [B, H]), dW_ih [G, D], dW_hh [G, R] (, db_ih [G]) (, db_hh [G]), and
                    the gradients of the ``norms`` (the four of a normed cell, empty
                    where empty; dW_hr [P, H])
    fused_step      y [1, B, H], h' [1, B, H], c' [1, B, H] (LSTM) or [0, B, H]

``_fused_cpu.cpp`` documents the same contract at ``forward``, ``backward`` and ``step``,
but packs the per-token buffers into N rows, N the real tokens (the sum of the lengths).
N depends on the lengths' values, and an operator whose output shape does (an unbacked
size) breaks ``torch.compile``'s graph unless ``fullgraph=True``, so the operator pads
them to T*B rows (a copy, with lengths only) and its backward reads the first N. The
fake implementations follow this contract, so tracing gets every shape and dtype with
symbolic T and B. Autograd is registered on ``fused_layer``: its saved buffers are
outputs that the backward reads and that no gradient flows into.

Eager calls skip the dispatcher (``layer``): the same implementation and autograd, called
directly, since a dispatched custom operator costs tens of microseconds of Python per
call. A program exported with these operators needs rnnkit installed (and imported) to
load and run.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnkit.nn.kernels import gemm, precision

CELL_CODES = {
    "rnn_tanh": 0,
    "rnn_relu": 1,
    "gru": 2,
    "gru_reset_before": 3,
    "lstm": 4,
    "mingru": 5,
    "minlstm": 6,
    "lstm_ln": 7,
    "gru_ln": 8,
}
"""The extension's cell codes. The minimal cells (5, 6) have no recurrent weight: their
``w_hh`` entries are [0, H] placeholders (``fused.recurrent_weight``), whose gradient
comes back as another [0, H] tensor."""
_LSTM, _GRU = CELL_CODES["lstm"], CELL_CODES["gru"]
_LSTM_LN, _GRU_LN = CELL_CODES["lstm_ln"], CELL_CODES["gru_ln"]
_TWO_STATES = (_LSTM, _LSTM_LN)
_NORMED = (_LSTM_LN, _GRU_LN)


def _states(cell: int) -> int:
    return 2 if cell in _TWO_STATES else 1


def norm_width(cell: int, H: int) -> int:
    """The per-token width of the normed cells' saved norm buffer (``_fused_cpu.cpp``)."""
    if cell not in _NORMED:
        return 0
    G = (4 if cell == _LSTM_LN else 3) * H
    return 2 * G + (H if cell == _LSTM_LN else 0) + 3


def _ext() -> ModuleType:
    from rnnkit.nn.kernels import fused  # fused imports this module: bind at call time

    ext = fused.load()
    if ext is None:
        raise RuntimeError("the rnnkit fused CPU kernels could not be compiled on this machine")
    return ext


def _noise_kinds(noise: Sequence[Tensor]) -> tuple[bool, bool]:
    """(recurrent dropout?, zoneout?) of a layer call's ``noise`` list."""
    if not noise:
        return False, False
    return noise[0].numel() > 0, noise[1].numel() > 0 or noise[2].numel() > 0


def _projected(cell: int, norms: Sequence[Tensor]) -> bool:
    """Whether a layer call is the projected LSTM's: its ``norms`` hold W_hr [P, H]."""
    return cell == _LSTM and len(norms) > 0


def _kept(cell: int, noise: Sequence[Tensor] = (), projected: bool = False) -> tuple[bool, ...]:
    """Which of the extension's six saved buffers per direction (hbuf, cbuf, gates, ghn,
    hm, and ln or the projected LSTM's r) the cell and the noise have; the others come back
    as empty tensors and are dropped."""
    masked, zoned = _noise_kinds(noise)
    gates = cell > CELL_CODES["rnn_relu"] or zoned
    extra = cell in _NORMED or projected
    return True, cell in _TWO_STATES, gates, cell in (_GRU, _GRU_LN), masked, extra


def _bf16_mode(bf16: bool) -> int:
    """The extension's Bf16Mode for a call: 0 fp32/fp64 products, 1 bf16 natively, 2 bf16
    emulated on fp32 products (``precision.bf16_native``)."""
    return 0 if not bf16 else 1 if precision.bf16_native() else 2


_gemm_lock = threading.Lock()
_gemm_set: str | None = None


def _use_gemm(ext: ModuleType, x: Tensor, batch: int, w_ih: Tensor, w_hh: Tensor) -> None:
    """Set the extension's GEMM library to ``gemm.choose``'s choice for this layer (fp32
    only): for the per-step products' shape, G = w_ih's rows (the minimal cells, without
    such products, take it for the big ones). Callers hold ``_gemm_lock`` from here through
    the call that uses it, so another thread cannot switch it meanwhile."""
    global _gemm_set
    if x.dtype == torch.float32:
        name = gemm.choose(batch, w_ih.shape[0], w_hh.shape[1])
        if name != _gemm_set:
            ext.set_gemm_backend(name)
            _gemm_set = name


# ---- rnnkit::fused_layer -------------------------------------------------------------


def layer_forward(
    cell: int,
    x: Tensor,
    lengths: Tensor | None,
    h0: list[Tensor],
    c0: list[Tensor],
    w_ih: list[Tensor],
    w_hh: list[Tensor],
    b_ih: list[Tensor],
    b_hh: list[Tensor],
    norms: list[Tensor],
    noise: list[Tensor],
    training: bool,
    bf16: bool,
) -> list[Tensor]:
    """One layer call into the extension (the per-token buffers packed: N rows)."""
    ext = _ext()
    none = x.new_empty(0)
    dirs = len(w_ih)
    lengths_arg = x.new_empty(0, dtype=torch.int64) if lengths is None else lengths.contiguous()
    with _gemm_lock:
        _use_gemm(ext, x, x.shape[1], w_ih[0], w_hh[0])
        res = ext.forward(
            cell,
            x,
            lengths_arg,
            h0,
            c0,
            w_ih,
            w_hh,
            b_ih or [none] * dirs,
            b_hh or [none] * dirs,
            norms,
            noise,
            training,
            _bf16_mode(bf16),
        )
    n_out = 1 + dirs * _states(cell)
    kept = _kept(cell, noise, _projected(cell, norms))
    saved = [t for k, t in enumerate(res[n_out:]) if kept[k % len(kept)]]
    return [*res[:n_out], *saved]


def _token_buffers(cell: int, noise: Sequence[Tensor], projected: bool) -> list[bool]:
    """For each saved buffer ``layer_forward`` returns per direction: packed per token?"""
    return [k >= 2 for k, kept in enumerate(_kept(cell, noise, projected)) if kept]


def _tokens(lengths: Tensor | None, T: int, B: int) -> int:
    """N, the tokens the kernel packs: sum_b min(length_b, T) (T B without lengths)."""
    return T * B if lengths is None else int(lengths.clamp(0, T).sum())


@torch.library.custom_op("rnnkit::fused_layer", mutates_args=(), device_types="cpu")
def fused_layer(
    cell: int,
    x: Tensor,
    lengths: Tensor | None,
    h0: list[Tensor],
    c0: list[Tensor],
    w_ih: list[Tensor],
    w_hh: list[Tensor],
    b_ih: list[Tensor],
    b_hh: list[Tensor],
    norms: list[Tensor],
    noise: list[Tensor],
    training: bool,
    bf16: bool,
) -> list[Tensor]:
    args = (cell, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, norms, noise, training, bf16)
    res = layer_forward(*args)
    rows = x.shape[0] * x.shape[1]
    if not training or lengths is None or _tokens(lengths, x.shape[0], x.shape[1]) == rows:
        return res
    n_out = 1 + len(w_ih) * _states(cell)
    token = _token_buffers(cell, noise, _projected(cell, norms))
    for k in range(n_out, len(res)):
        if token[(k - n_out) % len(token)]:  # [N, F] -> [T*B, F], the tail never read
            padded = res[k].new_empty(rows, res[k].shape[1])
            padded[: res[k].shape[0]] = res[k]
            res[k] = padded
    return res


@fused_layer.register_fake
def _(cell, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, norms, noise, training, bf16):
    T, B = x.shape[0], x.shape[1]
    G, R = w_ih[0].shape[0], w_hh[0].shape[1]  # R: h's width, P for the projected LSTM
    projected = _projected(cell, norms)
    H = norms[0].shape[1] if projected else R
    dirs = len(w_ih)
    result = [x.new_empty(T, B, dirs * R)]
    for d in range(dirs):
        result += [s.new_empty(s.shape, dtype=x.dtype) for s in (h0[d], *c0[d : d + 1])]
    if training:
        shapes = ((T + 1, B, R), (T + 1, B, H), (T * B, G), (T * B, H), (T * B, R))
        shapes += ((T * B, H if projected else norm_width(cell, H)),)
        kept = _kept(cell, noise, projected)
        for _d in range(dirs):
            result += [x.new_empty(shape) for k, shape in enumerate(shapes) if kept[k]]
    return result


def _setup_layer(ctx: Any, inputs: tuple, output: list[Tensor]) -> None:
    """Autograd's record of a layer call (the op's and the eager path's)."""
    cell, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, norms, noise, training, bf16 = inputs
    dirs, n_states = len(w_ih), _states(cell)
    saved = output[1 + dirs * n_states :]
    if not training:  # an inference call keeps nothing, so it has no backward
        ctx.mark_non_differentiable(*output)
        return
    ctx.mark_non_differentiable(*saved)
    ctx.set_materialize_grads(False)  # no zero gradients for the saved buffers
    ctx.cell, ctx.dirs, ctx.n_states, ctx.bf16 = cell, dirs, n_states, bf16
    ctx.has_b = (len(b_ih) > 0, len(b_hh) > 0)
    ctx.state_shapes = ([h.shape for h in h0], [c.shape for c in c0])  # h [B, R], c [B, H]
    ctx.has_lengths = lengths is not None
    ctx.n_noise, ctx.n_norms = len(noise), len(norms)
    ctx.save_for_backward(x, lengths, *w_ih, *w_hh, *norms, *noise, *saved)


def _layer_grads(ctx: Any, grads: Sequence[Tensor | None], backward: Callable) -> tuple:
    """(dx or None, [dh0], [dc0], [dW_ih], [dW_hh], [db_ih], [db_hh], [d norms]) from the
    gradients of a layer call's outputs, by ``backward`` (the op, or its implementation)."""
    dirs, n_states = ctx.dirs, ctx.n_states
    x, lengths, *rest = ctx.saved_tensors
    w_ih, w_hh, rest = rest[:dirs], rest[dirs : 2 * dirs], rest[2 * dirs :]
    norms, rest = rest[: ctx.n_norms], rest[ctx.n_norms :]
    noise, saved = rest[: ctx.n_noise], rest[ctx.n_noise :]
    dout = grads[0]
    if dout is None:  # only the final states were used
        dout = x.new_zeros(x.shape[0], x.shape[1], dirs * w_hh[0].shape[1])
    finals = grads[1 : 1 + dirs * n_states]
    d_states = [
        [g if g is not None else x.new_zeros(shapes[d]) for d, g in enumerate(part)]
        for part, shapes in zip(
            (finals[::n_states], finals[1::n_states] if n_states == 2 else []),
            ctx.state_shapes,
            strict=True,
        )
    ]
    need_dx = bool(ctx.needs_input_grad[1])
    has_b_ih, has_b_hh = ctx.has_b
    res = backward(
        ctx.cell,
        x,
        lengths if ctx.has_lengths else None,
        dout,
        *d_states,
        list(saved),
        list(norms),
        list(noise),
        list(w_ih),
        list(w_hh),
        has_b_ih,
        has_b_hh,
        need_dx,
        ctx.bf16,
    )
    dx, per = (res[0], res[1:]) if need_dx else (None, res)
    per_norms = ctx.n_norms // dirs
    width = n_states + 2 + has_b_ih + has_b_hh + per_norms  # per direction, the op's order
    kinds = [*("dh0", "dc0")[:n_states], "dw_ih", "dw_hh"]
    kinds += ["db_ih"] * has_b_ih + ["db_hh"] * has_b_hh + ["d_norms"] * per_norms
    out: dict[str, list[Tensor]] = {
        k: [] for k in ("dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh", "d_norms")
    }
    for d in range(dirs):
        for kind, g in zip(kinds, per[d * width : (d + 1) * width], strict=True):
            out[kind].append(g)
    return (dx, *out.values())


def _backward_layer(ctx: Any, grads: list[Tensor | None]) -> tuple:
    dx, *lists = _layer_grads(ctx, grads, fused_layer_backward)
    return None, dx, None, *lists, [None] * ctx.n_noise, None, None


fused_layer.register_autograd(_backward_layer, setup_context=_setup_layer)


class _EagerLayer(torch.autograd.Function):
    """``fused_layer``'s autograd without the dispatcher: eager calls take this (the
    dispatched custom op costs tens of microseconds of Python per call; docs/export.md).
    Same record and backward as the op's. Inputs: cell, x, lengths, the sizes of the
    lists (h0, c0, w_ih, w_hh, b_ih, b_hh, norms, noise), training, bf16, then the lists'
    tensors."""

    @staticmethod
    def forward(ctx, cell, x, lengths, sizes, training, bf16, *flat):  # type: ignore[override]
        lists, start = [], 0
        for size in sizes:
            lists.append(list(flat[start : start + size]))
            start += size
        inputs = (cell, x, lengths, *lists, training, bf16)
        output = layer_forward(*inputs)
        _setup_layer(ctx, inputs, output)
        return tuple(output)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):  # type: ignore[override]
        dx, *lists = _layer_grads(ctx, grads, layer_backward)
        no_noise = [None] * ctx.n_noise
        return None, dx, None, None, None, None, *itertools.chain(*lists), *no_noise


def layer(
    cell: int,
    x: Tensor,
    lengths: Tensor | None,
    h0: list[Tensor],
    c0: list[Tensor],
    w_ih: list[Tensor],
    w_hh: list[Tensor],
    b_ih: list[Tensor],
    b_hh: list[Tensor],
    norms: list[Tensor],
    noise: list[Tensor],
    training: bool,
    bf16: bool,
) -> list[Tensor]:
    """``fused_layer``: the custom operator when traced (``torch.compile``,
    ``torch.export``), else the same implementation and autograd called directly.
    ``training`` (saved buffers, a backward) only where autograd records the call."""
    args = (cell, x, lengths, h0, c0, w_ih, w_hh, b_ih, b_hh, norms, noise)
    if torch.compiler.is_compiling() or type(x) is not Tensor:
        return fused_layer(*args, training, bf16)
    if not training:
        return layer_forward(*args, False, bf16)
    lists = (h0, c0, w_ih, w_hh, b_ih, b_hh, norms, noise)
    sizes = tuple(len(part) for part in lists)
    flat = itertools.chain(*lists)
    return list(_EagerLayer.apply(cell, x, lengths, sizes, True, bf16, *flat))


# ---- rnnkit::fused_layer_backward ----------------------------------------------------


def layer_backward(
    cell: int,
    x: Tensor,
    lengths: Tensor | None,
    dout: Tensor,
    dh: list[Tensor],
    dc: list[Tensor],
    saved: list[Tensor],
    norms: list[Tensor],
    noise: list[Tensor],
    w_ih: list[Tensor],
    w_hh: list[Tensor],
    has_b_ih: bool,
    has_b_hh: bool,
    need_dx: bool,
    bf16: bool,
) -> list[Tensor]:
    """A layer call's backward in the extension, from ``layer_forward``'s buffers."""
    ext = _ext()
    none = x.new_empty(0)
    projected = _projected(cell, norms)
    kept = _kept(cell, noise, projected)
    per = sum(kept)
    full: list[Tensor] = []  # the extension's six buffers per direction
    for d in range(len(w_ih)):
        mine = iter(saved[d * per : (d + 1) * per])
        full += [next(mine) if k else none for k in kept]
    lengths_arg = x.new_empty(0, dtype=torch.int64) if lengths is None else lengths.contiguous()
    with _gemm_lock:
        _use_gemm(ext, x, x.shape[1], w_ih[0], w_hh[0])
        res = ext.backward(
            cell,
            x,
            lengths_arg,
            dout,
            dh,
            dc,
            full,
            norms,
            noise,
            w_ih,
            w_hh,
            has_b_ih,
            has_b_hh,
            need_dx,
            _bf16_mode(bf16),
        )
    normed = cell in _NORMED
    extra = (True, False, False, False) if projected else (normed,) * 4  # dW_hr, or the norms'
    want = (True, cell in _TWO_STATES, True, True, has_b_ih, has_b_hh, *extra)
    grads = [t for k, t in enumerate(res[1:]) if want[k % len(want)]]
    return [res[0], *grads] if need_dx else grads


@torch.library.custom_op("rnnkit::fused_layer_backward", mutates_args=(), device_types="cpu")
def fused_layer_backward(
    cell: int,
    x: Tensor,
    lengths: Tensor | None,
    dout: Tensor,
    dh: list[Tensor],
    dc: list[Tensor],
    saved: list[Tensor],
    norms: list[Tensor],
    noise: list[Tensor],
    w_ih: list[Tensor],
    w_hh: list[Tensor],
    has_b_ih: bool,
    has_b_hh: bool,
    need_dx: bool,
    bf16: bool,
) -> list[Tensor]:
    N = _tokens(lengths, x.shape[0], x.shape[1])
    token = _token_buffers(cell, noise, _projected(cell, norms))
    saved = [t[:N] if token[k % len(token)] else t for k, t in enumerate(saved)]
    args = (cell, x, lengths, dout, dh, dc, saved, norms, noise, w_ih, w_hh, has_b_ih, has_b_hh)
    return layer_backward(*args, need_dx, bf16)


@fused_layer_backward.register_fake
def _(
    cell,
    x,
    lengths,
    dout,
    dh,
    dc,
    saved,
    norms,
    noise,
    w_ih,
    w_hh,
    has_b_ih,
    has_b_hh,
    need_dx,
    bf16,
):
    G = w_ih[0].shape[0]
    per_norms = len(norms) // len(w_ih)
    result = [x.new_empty(x.shape)] if need_dx else []
    for d in range(len(w_ih)):
        result += [s.new_empty(s.shape, dtype=x.dtype) for s in (dh[d], *dc[d : d + 1])]
        result += [x.new_empty(G, w_ih[d].shape[1]), x.new_empty(w_hh[d].shape)]
        result += [x.new_empty(G) for has in (has_b_ih, has_b_hh) if has]
        mine = norms[d * per_norms : (d + 1) * per_norms]
        result += [x.new_empty(t.shape) for t in mine]
    return result


# ---- rnnkit::fused_step --------------------------------------------------------------


@torch.library.custom_op("rnnkit::fused_step", mutates_args=(), device_types="cpu")
def fused_step(
    cell: int,
    x: Tensor,
    h: Tensor,
    c: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    y_bf16: bool,
    state_bf16: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    none = x.new_empty(0)
    y, h_new, c_new = _ext().step(
        cell,
        x,
        h,
        none if c is None else c,
        w_ih,
        w_hh,
        none if b_ih is None else b_ih,
        none if b_hh is None else b_hh,
        y_bf16,
        state_bf16,
    )
    return y, h_new, c_new


@fused_step.register_fake
def _(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, y_bf16, state_bf16):
    H = w_hh.shape[1]
    B = h.numel() // H
    compute = torch.float32 if w_ih.dtype == torch.bfloat16 else w_ih.dtype
    state = torch.bfloat16 if state_bf16 else compute
    return (
        x.new_empty(1, B, H, dtype=torch.bfloat16 if y_bf16 else compute),
        x.new_empty(1, B, H, dtype=state),
        x.new_empty(1 if cell == _LSTM else 0, B, H, dtype=state),
    )
