"""The language model's output layer and cross-entropy as one autograd function.

``projected_cross_entropy`` computes logits = h W^T + b transposed, z^T = W h^T + b
[V, N]: MKL's SGEMM writes a tall [V, N] result faster than the wide [N, V] one that
``F.linear`` asks for (figures in ``docs/kernels.md``). The softmax then runs down the
columns, and the backward turns the saved logits into the gradient in place and reads
that one buffer for both products:

    P = dL/dz^T = (softmax down each column - onehot(target)) * dL / N      [V, N]
    dL/dh = P^T W      dL/dW = P h      dL/db = P 1

The column log-sum-exp and P (with its row sums) are two loops in the compiled
extension (``column_logsumexp``, ``column_softmax_grad_`` in ``kernels/_fused_cpu.cpp``);
elsewhere torch ops do the same. Because P overwrites the logits, the backward runs
once: a second backward through the same graph gets autograd's version-check error.

Traced (``torch.compile``, ``torch.export``), the function is ``F.cross_entropy`` of
``F.linear``: the compiler fuses those itself, and it cannot see into the extension.

Under bf16 autocast the three products take bf16 operands with fp32 accumulation (as
``F.linear`` does under autocast; h and W are rounded once, for all three). The logits
stay the bf16 product and the bias is added in fp32 as the column loops read them; the
log-sum-exp and every returned gradient are fp32, and P, computed in fp32, is rounded to
bf16 once, in z^T's buffer, as the two backward products read it. On a CPU without bf16
instructions the operands are rounded the same way but kept in fp32 for torch's fp32
products (``rnnkit.nn.kernels.precision.to_bf16``), and the logits are fp32.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.autograd.graph import increment_version

from rnnkit.nn.kernels.precision import to_bf16


class _ProjectedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        h: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        target: Tensor,  # type: ignore[override]
        mean: bool,
        bf16: bool,
    ) -> Tensor:
        if bf16:  # each operand rounded once, for the forward's and the backward's products
            h, weight = to_bf16(h), to_bf16(weight)
        zt, apart = _logits_t(h, weight, bias)  # [V, N]
        lse = _column_logsumexp(zt, apart)  # [N]
        losses = lse - _target_logits(zt, apart, target)
        ctx.save_for_backward(zt, lse, h, weight, target, apart)
        ctx.has_bias, ctx.mean, ctx.bf16 = bias is not None, mean, bf16
        return losses.mean() if mean else losses.sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        zt, lse, h, weight, target, apart = ctx.saved_tensors
        scale = grad / target.shape[0] if ctx.mean else grad
        p, db = _column_softmax_grad_(zt, lse, target, scale, apart)  # dL/dz^T in z^T's buffer
        if ctx.bf16 and p.dtype != torch.bfloat16:  # bf16 emulated: P rounded as natively
            p = to_bf16(p)
        need = ctx.needs_input_grad
        dh = _mm(p.t(), weight) if need[0] else None  # [N, V] @ [V, H]
        dw = _mm(p, h) if need[1] else None  # [V, N] @ [N, H]
        return dh, dw, db if ctx.has_bias and need[2] else None, None, None, None


def _columns_kernel(zt: Tensor) -> Any:
    """The compiled extension's column softmax for CPU fp32/fp64/bf16 z^T, else None."""
    if zt.device.type != "cpu" or zt.dtype not in (torch.float32, torch.float64, torch.bfloat16):
        return None
    from rnnkit.nn.kernels import fused

    return fused.load()


def _logits_t(h: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """(h W^T + b)^T = W h^T + b[:, None], [V, N], and the bias kept apart (or None).

    For bf16 h and weight (bf16 autocast) z^T is the bf16 product W h^T and the fp32 bias
    stays apart: the compiled column loops widen z^T and add it on read (only the product
    is rounded, not z + b), and the logits are never copied to fp32. Without the extension (another
    device) z^T is widened to fp32 with the bias added, and nothing stays apart.
    """
    if h.dtype == torch.bfloat16:
        zt = weight @ h.t()  # [V, H] @ [H, N], fp32 accumulation, bf16 result
        if _columns_kernel(zt) is not None:
            return zt, bias
        zt = zt.float()
        return (zt if bias is None else zt.add_(bias[:, None])), None
    if bias is None:
        return weight @ h.t(), None
    return torch.addmm(bias[:, None], weight, h.t()), None


def _target_logits(zt: Tensor, apart: Tensor | None, target: Tensor) -> Tensor:
    """z^T[target[n], n] + b[target[n]] for each column n, in the compute dtype."""
    picked = zt.gather(0, target[None, :])[0]
    return picked.float() + apart[target] if apart is not None else picked


def _column_logsumexp(zt: Tensor, apart: Tensor | None) -> Tensor:
    """log sum_v exp (z^T[v, n] + b[v]) for each column n."""
    ext = _columns_kernel(zt)
    return ext.column_logsumexp(zt, apart) if ext is not None else torch.logsumexp(zt, dim=0)


def _column_softmax_grad_(
    zt: Tensor, lse: Tensor, target: Tensor, scale: Tensor, apart: Tensor | None
) -> tuple[Tensor, Tensor]:
    """In place: z^T -> (softmax down each column - onehot(target)) * scale; and its row
    sums (dL/db)."""
    ext = _columns_kernel(zt)
    if ext is not None:  # scale is the 0-dim gradient of a scalar loss
        db = ext.column_softmax_grad_(zt, lse, target, float(scale), apart)
        increment_version(zt)  # written through a raw pointer: tell autograd's version check
        return zt, db
    p = zt.sub_(lse).exp_()
    minus_one = torch.full((1, target.shape[0]), -1.0, dtype=p.dtype, device=p.device)
    p.scatter_add_(0, target[None, :], minus_one).mul_(scale)
    return p, p.sum(1)


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """a @ b; where either is bf16, on bf16 copies of both (fp32 accumulation) and widened
    to fp32, the dtype of the parameters and of h under autocast."""
    if a.dtype != torch.bfloat16 and b.dtype != torch.bfloat16:
        return a @ b
    return (a.to(torch.bfloat16) @ b.to(torch.bfloat16)).float()


def projected_cross_entropy(
    h: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, reduction: str = "mean"
) -> Tensor:
    """Cross-entropy in nats of logits = h W^T + b (h [N, H], W [V, H], b [V] or None)
    against class ids target [N], reduced by "mean" or "sum"; the same value and
    gradients as ``F.cross_entropy(F.linear(h, weight, bias), target)``, faster."""
    V = weight.shape[0]
    if h.dim() != 2 or weight.dim() != 2 or h.shape[1] != weight.shape[1]:
        raise ValueError(
            f"projected_cross_entropy needs h [N, H] and weight [V, H], got {tuple(h.shape)} "
            f"and {tuple(weight.shape)}"
        )
    if target.shape != h.shape[:1] or (bias is not None and bias.shape != (V,)):
        raise ValueError(
            f"projected_cross_entropy needs target [{h.shape[0]}] and bias [{V}], got "
            f"{tuple(target.shape)} and {None if bias is None else tuple(bias.shape)}"
        )
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class ids, got dtype {target.dtype}")
    # the kernel reads target as one contiguous int64 array (a view of a window's rows
    # may be strided, F.cross_entropy takes any)
    target = target.to(torch.int64).contiguous()
    if torch.compiler.is_compiling():  # traced: torch's own ops, which the compiler fuses
        return F.cross_entropy(F.linear(h, weight, bias), target, reduction=reduction)
    device = h.device.type
    bf16 = False
    if torch.is_autocast_enabled(device):  # the log-sum-exp of every logit stays fp32
        bf16 = torch.get_autocast_dtype(device) == torch.bfloat16
        with torch.autocast(device, enabled=False):
            h, weight = h.float(), weight.float()
            bias = None if bias is None else bias.float()
            return _cross_entropy(h, weight, bias, target, reduction == "mean", bf16)
    return _cross_entropy(h, weight, bias, target, reduction == "mean", bf16)


def _cross_entropy(
    h: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, mean: bool, bf16: bool
) -> Tensor:
    tensors = (h, weight) if bias is None else (h, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _ProjectedCrossEntropy.apply(h, weight, bias, target, mean, bf16)
    if bf16:
        h, weight = to_bf16(h), to_bf16(weight)
    zt, apart = _logits_t(h, weight, bias)
    losses = _column_logsumexp(zt, apart) - _target_logits(zt, apart, target)
    return losses.mean() if mean else losses.sum()
