"""The fp32 error model of the parity tests: how far may a *correct* fp32 computation of
this very problem land from the exact result?

A constant tolerance (say 1e-5 relative) is met by one BLAS build on well-conditioned
problems and missed by another, or by the same one on a tiny, ill-conditioned shape (a
saturated tanh whose derivative 1 - y^2 comes from a rounded y; an H = 1 sum whose terms
cancel). The bound here scales with both the reduction lengths and the conditioning of
the problem, and holds for any summation order, so for any correct BLAS and kernel.

How: Monte Carlo arithmetic (Parker, Pierce and Eggert 2000, "Monte Carlo arithmetic: how
to gamble with floating point and win"). The composite path runs in float64 on the very
fp32 inputs, forward and backward, with every aten operation's result perturbed by a
random error of the size an fp32 operation may commit (u = 2^-24, the fp32 unit
roundoff):

* element-wise operations: a relative error of up to ``ELEMENTWISE_ULPS`` ulps (2u each),
  which covers correctly rounded arithmetic and the few-ulp polynomial exp, sigmoid and
  tanh of vectorised kernels;
* a matrix product or a sum over n terms: the classical bound for any summation order,
  |error| <= gamma_n |A| |B| with gamma_n = n u / (1 - n u) (Higham 2002, "Accuracy and
  Stability of Numerical Algorithms", section 3.1 and 3.5), drawn uniformly inside it
  per output element.

The perturbed runs' spread around the unperturbed float64 run (the truth) measures how
rounding anywhere propagates to each output and gradient. Half of the draws perturb each
element independently (rounding errors of random sign, which partly cancel in a sum);
the other half give all elements of one operation's result errors of one sign (the
systematic error of a biased exp or a summation order, which add up). The bound of a
tensor is ``SAFETY`` times the largest deviation seen over ``DRAWS`` draws, plus u |truth|
(the final rounding to fp32). The draws are seeded, so the bound is the same on every
run.

The model is tight enough to catch a real bug: tests/test_error_model.py builds the fused
kernel with one gate perturbed by a relative 1e-4 and checks that the comparison fails.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

UNIT_ROUNDOFF = 2.0**-24  # fp32: |fl(x) - x| <= u |x|
ELEMENTWISE_ULPS = 4  # one ulp is 2u
SAFETY = 4.0
DRAWS = 4  # two with independent errors, two with coherent ones

_aten = torch.ops.aten
_MATMULS = {_aten.mm.default, _aten.bmm.default, _aten.addmm.default, _aten.baddbmm.default}
_SUMS = {_aten.sum.dim_IntList, _aten.sum.default, _aten.mean.dim, _aten.mean.default}
_EXACT = {  # tagged point-wise, but they select, move or negate: no rounding
    _aten.clone.default,
    _aten.where.self,
    _aten.masked_fill.Scalar,
    _aten.masked_fill.Tensor,
    _aten.neg.default,
    _aten.abs.default,
    _aten.relu.default,
    _aten.threshold_backward.default,
}


def _gamma(n: int) -> float:
    nu = n * UNIT_ROUNDOFF
    return nu / (1.0 - nu)


class RoundingNoise(TorchDispatchMode):
    """Perturb every floating-point aten result as fp32 arithmetic may err (see the module
    docstring). Views, copies, indexing and concatenation are exact and left alone."""

    def __init__(self, seed: int, coherent: bool):
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)
        self.coherent = coherent

    def _uniform(self, like: Tensor) -> Tensor:
        """U(-1, 1) per element; or, coherent, U(0, 1) times one random sign per result."""
        u = torch.rand(like.shape, generator=self.generator, dtype=like.dtype)
        if self.coherent:
            sign = torch.randint(0, 2, (), generator=self.generator).item() * 2 - 1
            return sign * u
        return 2 * u - 1

    def _product_error(self, func, args, kwargs, out: Tensor) -> Tensor:
        """gamma_n |A| |B| (+ |beta C| for the add- forms): the error bound of each entry."""
        if func in (_aten.mm.default, _aten.bmm.default):
            a, b = args[0], args[1]
            magnitude = torch.matmul(a.abs(), b.abs())
        else:
            c, a, b = args[0], args[1], args[2]
            beta = kwargs.get("beta", args[3] if len(args) > 3 else 1)
            alpha = kwargs.get("alpha", args[4] if len(args) > 4 else 1)
            magnitude = abs(alpha) * torch.matmul(a.abs(), b.abs()) + abs(beta) * c.abs()
            magnitude = magnitude.expand_as(out)
        return _gamma(a.shape[-1] + 1) * magnitude

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(out, Tensor) or not out.is_floating_point() or out.numel() == 0:
            return out
        if func in _MATMULS:
            bound = self._product_error(func, args, kwargs, out)
        elif func in _SUMS:
            x = args[0]
            n = max(x.numel() // max(out.numel(), 1), 1)
            total = func(x.abs(), *args[1:], **kwargs)
            bound = _gamma(n) * total
        elif torch.Tag.pointwise in func.tags and func not in _EXACT:
            bound = 2 * ELEMENTWISE_ULPS * UNIT_ROUNDOFF * out.abs()
        else:
            return out
        noise = bound * self._uniform(out)
        if func._schema.is_mutable:  # an in-place op returns its (already written) input
            out.add_(noise)
            return out
        return out + noise


def fp32_truth_and_bounds(
    compute: Callable[[], Sequence[Tensor]],
) -> tuple[list[Tensor], list[float]]:
    """Run ``compute`` (a float64 computation on the fp32-rounded inputs, returning outputs
    and gradients) exactly and under ``DRAWS`` seeded draws of rounding noise. Returns the
    exact tensors and, per tensor, the largest absolute error a correct fp32 computation
    may make on it."""
    truth = [t.detach() for t in compute()]
    deviation = [0.0] * len(truth)
    for seed in range(DRAWS):
        with RoundingNoise(seed, coherent=seed % 2 == 1):
            noisy = [t.detach() for t in compute()]
        for k, (n, e) in enumerate(zip(noisy, truth, strict=True)):
            if e.numel():
                deviation[k] = max(deviation[k], (n - e).abs().max().item())
    bounds = []
    for d, e in zip(deviation, truth, strict=True):
        scale = e.abs().max().item() if e.numel() else 0.0
        bounds.append(SAFETY * d + UNIT_ROUNDOFF * scale + math.ulp(0.0))
    return truth, bounds


def float64_leaves(tree):
    """The same leaves (tensors, nested in tuples and lists) as float64 leaves that need
    gradients where the originals did."""

    def up(t):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            return t
        return t.detach().double().requires_grad_(t.requires_grad)

    return tree_map(up, tree)
