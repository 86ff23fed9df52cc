"""The parallel scan of the cells whose gates read x_t only (minGRU, minLSTM;
``rnnkit.nn.cells.minimal``): ``runner.run_layer``'s contract, in torch ops on any device,
differentiated by autograd.

Such a cell is h_t = a_t h_{t-1} + b_t with a_t in (0, 1) and b_t > 0 computed from x_t
alone (``Cell.scan_terms`` gives log a, log b). Unrolled from h_0,

    h_t = A_t h_0 + s_t,   A_t = prod_{k<=t} a_k,   s_t = sum_{k<=t} b_k prod_{k<j<=t} a_j,

and with a*_t = sum_{k<=t} log a_k (a cumulative sum), s_t = exp(a*_t) sum_{k<=t} b_k
exp(-a*_k), i.e. in log space (Feng et al. 2024, appendix; Heinsen 2023, "Efficient
parallelization of a ubiquitous sequential computation", arXiv:2311.06281):

    log s_t = a*_t + logcumsumexp_t(log b_t - a*_t)

Two things the paper leaves out are handled here:

* h_0 of either sign. log h_0 exists only for h_0 > 0 (the paper's pseudocode prepends
  log g(h_0)); the split above keeps h_0 out of the logarithms: it is carried linearly,
  A_t h_0, and only the positive b_t enter the log-space sum.
* Precision over long sequences. log s_t is a*_t plus a term near -a*_t, so it loses
  |a*_t| ulps to cancellation, and |a*_t| grows with t. The scan therefore runs in chunks
  of ``CHUNK`` steps, each from a zero state, and carries the state across chunk ends
  linearly (h = A h_in + s, one elementwise step per chunk, T / CHUNK of them): the
  cancellation is bounded by one chunk's sum of |log a|, not the whole sequence's.

Variable lengths: the forward direction never looks past a sequence's end, so its final
state is read at step L - 1 (h_0 for L = 0) and its outputs past L are zeroed. The reverse
direction reverses each sequence within its own length (steps L-1 .. 0, padding left in
place), scans forward and reverses back, so it starts at each sequence's own end, as the
runner's does. fp32 and fp64 inputs (a bf16 or fp16 layer runs the composite path); under
bf16 autocast (``precision.reduced_products``) the input projection is a bf16 product with
an fp32 result, as the fused kernel's, and the scan stays fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnkit.nn.cells import Cell, State
from rnnkit.nn.kernels.precision import products, to_bf16
from rnnkit.nn.runner import step_mask

CHUNK = 64
"""Steps per log-space chunk: the cancellation of log s_t grows with the chunk's summed
|log a| (docs/cells.md); the chunk carry is a loop of T / CHUNK elementwise steps."""


def supports(cell: Cell, x: Tensor) -> bool:
    """Any cell with ``scan_terms`` (the parallel-scan cells), fp32/fp64, any device."""
    return cell.scan_terms is not None and x.dtype in (torch.float32, torch.float64)


def preferred(cell: Cell, x: Tensor) -> bool:
    """Where "auto" picks the scan: off the CPU. On the CPU the compiled kernel's step loop
    (``kernels.fused``) trains faster, and where it does not build, the composite step
    loop still does at the tasks' batch and hidden sizes (docs/cells.md, "Speed", has the
    measurements); there the scan runs when asked for by name (``rnnkit.use_backend("scan")``)."""
    return not x.is_cpu


def linear_scan(log_a: Tensor, log_b: Tensor, h0: Tensor, chunk: int = CHUNK) -> Tensor:
    """h_t = a_t h_{t-1} + b_t for t = 0 .. T-1 from h_{-1} = h0: log_a, log_b [T, B, H]
    (a, b > 0), h0 [B, H] of any sign -> h [T, B, H]."""
    T, B, H = log_a.shape
    C = min(chunk, T)
    N = math.ceil(T / C)
    if N * C != T:  # pad after the last step: a = b = 1 there, finite and never read
        log_a = F.pad(log_a, (0, 0, 0, 0, 0, N * C - T))
        log_b = F.pad(log_b, (0, 0, 0, 0, 0, N * C - T))
    log_a = log_a.view(N, C, B, H)
    log_b = log_b.view(N, C, B, H)
    a_star = log_a.cumsum(1)  # [N, C, B, H]: log A within each chunk, <= 0
    s = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, dim=1))  # each chunk from 0
    A = torch.exp(a_star)  # [N, C, B, H]; underflows to 0 where the chunk forgets h_in
    # Chunk ends taken once and unbound: indexing A[n, -1] in the loop would make each
    # backward fill a zero tensor of the whole [N, C, B, H] (quadratic in N).
    A_end, s_end = A[:, -1].unbind(0), s[:, -1].unbind(0)  # N x [B, H]
    h_in = [h0]  # the state entering each chunk: linear, so h0 may have any sign
    for n in range(N - 1):
        h_in.append(A_end[n] * h_in[-1] + s_end[n])  # [B, H]
    h = (A * torch.stack(h_in)[:, None] + s).view(N * C, B, H)  # [T (+ padding), B, H]
    return h if N * C == T else h[:T]


def _reverse_within(t: Tensor, lengths: Tensor | None) -> Tensor:
    """t [T, B, F] with each sequence's first L steps in reverse order (padding stays);
    its own inverse."""
    if lengths is None:
        return t.flip(0)
    steps = torch.arange(t.shape[0], device=t.device)[:, None]  # [T, 1]
    L = lengths[None, :]  # [1, B]
    index = torch.where(steps < L, L - 1 - steps, steps)  # [T, B]
    return t.gather(0, index[..., None].expand_as(t))


def _projection(x: Tensor, w_ih: Tensor, b_ih: Tensor | None) -> Tensor:
    """x [.., D] @ w_ih.T [D, G] + b_ih -> gx [.., G]; a bf16 product when bf16 weights
    (the streaming copies) or ``reduced_products`` ask for it, its result in fp32."""
    if w_ih.dtype == torch.bfloat16 or (products() == torch.bfloat16 and x.dtype == torch.float32):
        gx = F.linear(to_bf16(x), to_bf16(w_ih)).float()  # [.., G]
        return gx if b_ih is None else gx + b_ih.float()
    return F.linear(x, w_ih, b_ih)  # [.., G]


def run_layer(
    cell: Cell,
    x: Tensor,
    lengths: Tensor | None,
    states: list[State],
    weights: list,
) -> tuple[Tensor, list[State]]:
    """x [T, B, D] -> (out [T, B, dirs*H], final states per direction), as
    ``runner.run_layer``; weights per direction (w_ih [G, D], None, b_ih [G] or None, None)."""
    assert cell.scan_terms is not None
    T, B = x.shape[:2]
    mask = step_mask(lengths, T)  # [T, B, 1] or None
    if mask is None:
        lengths = None
    outs: list[Tensor] = []
    finals: list[State] = []
    for direction, (state, w) in enumerate(zip(states, weights, strict=True)):
        w_ih, _, b_ih = w[:3]
        (h0,) = state
        x_d = _reverse_within(x, lengths) if direction == 1 else x
        gx = _projection(x_d, w_ih, b_ih)  # [T, B, G]
        log_a, log_b = cell.scan_terms(gx)  # each [T, B, H]
        h = linear_scan(log_a, log_b, h0)  # [T, B, H]
        if lengths is None:
            final = h[-1]
        else:
            last = (lengths - 1).clamp(min=0)[None, :, None].expand(1, B, h.shape[2])
            final = torch.where(lengths[:, None] > 0, h.gather(0, last)[0], h0)
        if direction == 1:
            h = _reverse_within(h, lengths)
        if mask is not None:
            h = torch.where(mask, h, 0.0)
        outs.append(h)
        finals.append((final,))
    return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0], finals


def step(
    cell: Cell,
    x: Tensor,
    state: State,
    weights: tuple,
    *,
    y_bf16: bool = False,
    state_bf16: bool = False,
) -> tuple[Tensor, State]:
    """One streaming step of one layer-direction (``kernels.Step``): the cell's sequential
    form, x [1, B, D], state (h [1, B, H] or [B, H],), weights (w_ih, None, b_ih, None)
    -> (output [1, B, H], (h' [1, B, H],)). bf16 weights (copies of fp32 ones) make the
    input projection a bf16 product; ``y_bf16``/``state_bf16`` round the results to bf16."""
    w_ih, _, b_ih = weights[:3]
    B, H = x.shape[-2], state[0].shape[-1]
    compute = torch.float32 if w_ih.dtype == torch.bfloat16 else w_ih.dtype
    gx = _projection(x.reshape(B, x.shape[-1]), w_ih, b_ih).to(compute)  # [B, G]
    (h,) = cell.step(gx, (state[0].reshape(B, H).to(compute),), None, None)
    y = h.to(torch.bfloat16) if y_bf16 else h
    new = h.to(torch.bfloat16) if state_bf16 else h.clone()
    return y.view(1, B, H), (new.view(1, B, H),)
