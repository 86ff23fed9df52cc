"""The output layer with its cross-entropy against F.linear + F.cross_entropy: value and
gradients, on both ways of the column softmax."""

import pytest
import torch
import torch.nn.functional as F

from rnnkit.tasks.lm import loss as losses
from rnnkit.tasks.lm.loss import projected_cross_entropy
from rnnkit.tasks.lm.model import LanguageModel, LMConfig


def test_projected_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 4, generator=g, dtype=torch.float64)
    target = torch.randint(0, 9, (6,), generator=g)
    (grad,) = torch.autograd.grad(projected_cross_entropy(x, w, None, target), x)
    numeric = torch.zeros_like(grad)
    eps = 1e-6
    with torch.no_grad():
        for i in range(x.numel()):
            step = torch.zeros(x.numel(), dtype=torch.float64)
            step[i] = eps
            step = step.view_as(x)
            up = projected_cross_entropy(x + step, w, None, target)
            down = projected_cross_entropy(x - step, w, None, target)
            numeric.view(-1)[i] = (up - down) / (2 * eps)
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kernel", [True, False], ids=["compiled", "torch-ops"])
def test_a_second_backward_through_the_same_graph_is_refused(kernel, monkeypatch):
    """The backward turns the saved logits into the gradient in place, so it runs once;
    autograd's version check refuses a second pass instead of returning a wrong gradient
    (the compiled path writes through a raw pointer and bumps the version itself)."""
    if kernel and losses._columns_kernel(torch.zeros(1)) is None:
        pytest.skip("the fused CPU extension did not build here")
    if not kernel:
        monkeypatch.setattr(losses, "_columns_kernel", lambda zt: None)
    x = torch.randn(3, 2, requires_grad=True)
    loss = projected_cross_entropy(x, torch.randn(4, 2), None, torch.tensor([0, 1, 2]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("n,h,v", [(1, 1, 2), (7, 5, 11), (60, 32, 1000), (3, 8, 65)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kernel", [True, False], ids=["compiled", "torch-ops"])
def test_projected_matches_linear_then_torch(n, h, v, dtype, bias, reduction, kernel, monkeypatch):
    """Both ways of the column softmax: the compiled extension's and torch's."""
    if kernel and losses._columns_kernel(torch.zeros(1, dtype=dtype)) is None:
        pytest.skip("the fused CPU extension did not build here")
    if not kernel:
        monkeypatch.setattr(losses, "_columns_kernel", lambda zt: None)
    g = torch.Generator().manual_seed(n * h * v)
    x = torch.randn(n, h, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(v, h, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=dtype, requires_grad=True) if bias else None
    target = torch.randint(0, v, (n,), generator=g)
    inputs = [t for t in (x, w, b) if t is not None]
    mine = projected_cross_entropy(x, w, b, target, reduction)
    mine_grads = torch.autograd.grad(-0.7 * mine, inputs)
    theirs = F.cross_entropy(F.linear(x, w, b), target, reduction=reduction)
    their_grads = torch.autograd.grad(-0.7 * theirs, inputs)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(mine, theirs, rtol=tol, atol=tol)
    for a, b_ in zip(mine_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b_, rtol=tol, atol=tol)
    with torch.no_grad():  # the forward-only path
        torch.testing.assert_close(
            projected_cross_entropy(x, w, b, target, reduction), theirs, rtol=tol, atol=tol
        )


def test_projected_skips_gradients_nobody_asked_for():
    x, w = torch.randn(4, 3), torch.randn(6, 3, requires_grad=True)
    loss = projected_cross_entropy(x, w, None, torch.tensor([0, 5, 2, 1]))
    (dw,) = torch.autograd.grad(loss, [w])
    torch.testing.assert_close(
        dw, torch.autograd.grad(F.cross_entropy(x @ w.t(), torch.tensor([0, 5, 2, 1])), [w])[0]
    )


@pytest.mark.parametrize("kernel", [True, False], ids=["compiled", "torch-ops"])
def test_projected_takes_a_strided_or_narrow_integer_target(kernel, monkeypatch):
    """As F.cross_entropy takes any layout: a strided view of int64 ids (a one-step LM
    window's targets can be one) and int32 ids give the same loss and gradient."""
    if kernel and losses._columns_kernel(torch.zeros(1)) is None:
        pytest.skip("the fused CPU extension did not build here")
    if not kernel:
        monkeypatch.setattr(losses, "_columns_kernel", lambda zt: None)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 7, (10,), generator=g)
    strided = ids[::2]
    assert not strided.is_contiguous()
    expected = F.cross_entropy(F.linear(x, w), strided)
    (grad,) = torch.autograd.grad(expected, x)
    for target in (strided, strided.to(torch.int32)):
        loss = projected_cross_entropy(x, w, None, target)
        torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
        torch.testing.assert_close(torch.autograd.grad(loss, x)[0], grad, rtol=1e-12, atol=1e-15)


def test_projected_bad_arguments_are_named():
    x, w = torch.zeros(4, 3), torch.zeros(6, 3)
    with pytest.raises(
        ValueError, match=r"h \[N, H\] and weight \[V, H\], got \(4, 3\) and \(6, 2\)"
    ):
        projected_cross_entropy(x, torch.zeros(6, 2), None, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target \[4\] and bias \[6\], got \(3,\) and None"):
        projected_cross_entropy(x, w, None, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum', got 'max'"):
        projected_cross_entropy(x, w, None, torch.zeros(4, dtype=torch.long), "max")
    with pytest.raises(ValueError, match="target must hold integer class ids, got dtype"):
        projected_cross_entropy(x, w, None, torch.zeros(4))


@pytest.mark.parametrize("tie", [False, True])
def test_language_model_loss_equals_its_logits_loss(tie):
    torch.manual_seed(0)
    config = LMConfig(cell="gru", hidden_size=16, embedding_size=16, tie_weights=tie)
    model = LanguageModel(config, 23).double()
    ids, targets = torch.randint(0, 23, (5, 3)), torch.randint(0, 23, (5, 3))
    loss, state = model.loss(ids, targets)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    logits, state2 = model(ids)
    reference = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, state2)
    for a, b in zip(grads, torch.autograd.grad(reference, list(model.parameters())), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_projected_extreme_logits_stay_finite():
    """Logits near float32's exponent range: the log-sum-exp is taken about each column's
    maximum, so nothing overflows."""
    x = torch.tensor([[1.0], [-1.0]], requires_grad=True)
    w = torch.tensor([[80.0], [-80.0], [0.0]], requires_grad=True)
    b = torch.tensor([0.0, 5.0, 0.0], requires_grad=True)
    target = torch.tensor([1, 2])
    mine = projected_cross_entropy(x, w, b, target)
    mine.backward()
    theirs = F.cross_entropy(F.linear(x.detach(), w.detach(), b.detach()), target)
    torch.testing.assert_close(mine, theirs)
    assert all(bool(torch.isfinite(t.grad).all()) for t in (x, w, b))


def test_projected_target_outside_the_vocabulary_is_refused():
    x, w = torch.randn(2, 3, requires_grad=True), torch.randn(4, 3)
    with pytest.raises((IndexError, RuntimeError), match=r"out of bounds|outside the vocabulary"):
        projected_cross_entropy(x, w, None, torch.tensor([0, 4])).backward()


def test_under_bf16_autocast_the_products_are_bf16_and_the_rest_fp32():
    """The three products take bf16 operands (fp32 accumulation), as F.linear does under
    autocast: the loss and every gradient are fp32 and within a few bf16 roundoffs of the
    fp32 ones, normwise (products of bf16-rounded operands: 2^-8 relative per operand,
    8 roundoffs of headroom), and differ from them (no silent fp32 fallback)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    b = torch.randn(50, generator=g, requires_grad=True)
    target = torch.randint(0, 50, (40,), generator=g)
    exact = projected_cross_entropy(x, w, b, target)
    exact_grads = torch.autograd.grad(exact, (x, w, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = projected_cross_entropy(x, w, b, target)
    mixed_grads = torch.autograd.grad(mixed, (x, w, b))
    bound = 8 * 2.0**-8
    assert mixed.dtype == torch.float32 and mixed != exact
    assert abs(mixed - exact) <= bound * abs(exact)
    for name, a, e in zip("xwb", mixed_grads, exact_grads, strict=True):
        assert a.dtype == torch.float32, name
        assert (a - e).norm() <= bound * e.norm(), name
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the inference path
        assert projected_cross_entropy(x, w, b, target) == mixed


@pytest.mark.parametrize("bias", [False, True])
def test_bf16_column_loops_widen_the_logits_and_round_p_once(bias):
    """The compiled column loops on bf16 logits (bf16 autocast): the log-sum-exp of the
    widened logits plus the fp32 bias, against fp64 torch ops; P = (softmax - onehot) *
    scale computed in fp32 and rounded once to bf16 (within one bf16 rounding of the fp64
    value, the target entries included), and db its fp32 row sums."""
    from rnnkit.nn.kernels import fused

    ext = fused.load()
    g = torch.Generator().manual_seed(5)
    V, N = 37, 23
    zt = (3 * torch.randn(V, N, generator=g)).to(torch.bfloat16)
    b = torch.randn(V, generator=g) if bias else None
    target = torch.randint(0, V, (N,), generator=g)
    z64 = zt.double() + (b.double()[:, None] if bias else 0)
    lse = ext.column_logsumexp(zt, b)
    assert lse.dtype == torch.float32
    torch.testing.assert_close(lse.double(), torch.logsumexp(z64, 0), rtol=1e-6, atol=1e-6)
    scale = 0.25
    p64 = torch.softmax(z64, 0)
    p64[target, torch.arange(N)] -= 1
    p64 *= scale
    db = ext.column_softmax_grad_(zt, lse, target, scale, b)
    assert zt.dtype == torch.bfloat16 and db.dtype == torch.float32
    ulp = 2.0**-8 * 1.001 * p64.abs() + 1e-7  # one bf16 rounding (8 bits), fp32 roundoff
    assert bool(((zt.double() - p64).abs() <= ulp).all())
    torch.testing.assert_close(db.double(), p64.sum(1), rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="bias must be contiguous"):
        ext.column_logsumexp(zt, torch.zeros(V + 1))
    with pytest.raises(RuntimeError, match="bf16 z\\^T only"):
        ext.column_logsumexp(zt.float(), torch.zeros(V))
