"""Optimisers, learning-rate schedules and gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rnnkit.common.config import check
from rnnkit.train.optim import OPTIMIZERS, OptimConfig, Schedule, clip_gradients, make_optimizer


def test_step_decay_is_zaremba_halving_after_epoch_4():
    schedule = Schedule(OptimConfig(lr=1.0, schedule="step", decay=0.5, decay_after=4), 100)
    assert [schedule.lr(epoch, 0) for epoch in range(1, 8)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]


def test_plateau_reduces_after_patience_and_round_trips():
    schedule = Schedule(OptimConfig(lr=1.0, schedule="plateau", decay=0.1, patience=1), 100)
    for loss in (3.0, 2.0, 2.5, 2.4):  # two epochs without improving on 2.0
        schedule.observe(loss)
    assert schedule.lr(5, 0) == pytest.approx(0.1)
    copy = Schedule(schedule.config, 100)
    copy.load_state_dict(schedule.state_dict())
    assert copy == schedule


def test_cosine_and_warmup():
    schedule = Schedule(OptimConfig(lr=1.0, schedule="cosine", min_lr=0.1, warmup_steps=4), 100)
    assert schedule.lr(1, 0) == pytest.approx(0.25)  # warm-up: (step + 1) / 4 of the rate
    assert schedule.lr(1, 50) == pytest.approx(0.55)
    assert schedule.lr(1, 100) == pytest.approx(0.1)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps(name):
    layer = nn.Linear(2, 1)
    optimizer = make_optimizer(
        OptimConfig(optimizer=name, lr=0.1, momentum=0.5), layer.parameters()
    )
    before = layer.weight.detach().clone()
    layer(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    assert not torch.equal(before, layer.weight.detach())


def test_clip_by_norm_reports_the_norm_before_clipping():
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    norm, clipped = clip_gradients([p], clip_norm=1.0, clip_value=None)
    assert norm == pytest.approx(5.0) and clipped
    assert float(p.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    p.grad = torch.tensor([0.3, 0.4])
    assert clip_gradients([p], clip_norm=1.0, clip_value=None) == (pytest.approx(0.5), False)


def test_clip_by_value():
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([-2.0, 0.5, 3.0])
    norm, clipped = clip_gradients([p], clip_norm=None, clip_value=1.0)
    assert clipped and norm == pytest.approx(math.sqrt(4 + 0.25 + 9))
    assert p.grad.tolist() == [-1.0, 0.5, 1.0]


def test_bad_optimizer_settings():
    with pytest.raises(ValueError, match=r"optim.lr must be in \(0, 100\], got 0.0"):
        make_optimizer(OptimConfig(lr=0.0), [nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match=r"optim.decay must be in \(0, 1\]"):
        check(OptimConfig(decay=2.0), "optim")
