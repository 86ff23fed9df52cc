"""The one-pass cross-entropy against F.cross_entropy: value and gradient."""

import pytest
import torch
import torch.nn.functional as F

from rnnkit.train.losses import cross_entropy


@pytest.mark.parametrize("n,v", [(1, 2), (7, 5), (40, 1000), (3, 65)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch_value_and_gradient(n, v, dtype):
    g = torch.Generator().manual_seed(n * v)
    logits = (3 * torch.randn(n, v, generator=g, dtype=dtype)).requires_grad_()
    target = torch.randint(0, v, (n,), generator=g)
    mine = cross_entropy(logits, target)
    (mine_grad,) = torch.autograd.grad(2.5 * mine, logits)
    theirs = F.cross_entropy(logits, target)
    (their_grad,) = torch.autograd.grad(2.5 * theirs, logits)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(mine, theirs, rtol=tol, atol=tol)
    torch.testing.assert_close(mine_grad, their_grad, rtol=tol, atol=tol)


def test_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 9, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 9, (6,), generator=g)
    (grad,) = torch.autograd.grad(cross_entropy(logits, target), logits)
    numeric = torch.zeros_like(grad)
    eps = 1e-6
    with torch.no_grad():
        for i in range(logits.numel()):
            step = torch.zeros(logits.numel(), dtype=torch.float64)
            step[i] = eps
            step = step.view_as(logits)
            up = F.cross_entropy(logits + step, target)
            down = F.cross_entropy(logits - step, target)
            numeric.view(-1)[i] = (up - down) / (2 * eps)
    torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-9)


def test_a_second_backward_through_the_same_graph_is_refused():
    """The backward reuses the saved probabilities in place, so it runs once; autograd's
    version check refuses a second pass instead of returning a wrong gradient."""
    logits = torch.randn(3, 4, requires_grad=True)
    loss = cross_entropy(logits, torch.tensor([0, 1, 2]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_without_grad_falls_back_and_agrees():
    logits, target = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    assert torch.equal(cross_entropy(logits, target), F.cross_entropy(logits, target))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"logits \[N, V\] and target \[N\], got \(2, 3, 4\)"):
        cross_entropy(torch.zeros(2, 3, 4, requires_grad=True), torch.zeros(2, dtype=torch.long))
