"""The gate-bias starts of the synthetic experiments (``rnnkit.synthetic.gate_init``):
which biases each start sets, that chrono keeps the gradient of the adding problem
alive over 200 steps where torch.nn's start loses it, and that the experiment's
defaults take an LSTM off the adding problem's trivial solution."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rnnkit.diagnostics import gradient_flow
from rnnkit.nn.factory import recurrent_layer
from rnnkit.synthetic import make_problem
from rnnkit.synthetic.experiment import ExperimentConfig, build_model, run_experiment
from rnnkit.synthetic.gate_init import init_gate_biases

H, T_MAX = 6, 40


def _layer(cell: str):
    torch.manual_seed(0)
    return recurrent_layer(cell, 3, H, num_layers=2, bidirectional=True)


def _block(bias: torch.Tensor, k: int) -> torch.Tensor:
    return bias.detach()[k * H : (k + 1) * H]


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_before", "rnn_tanh"])
@pytest.mark.parametrize("gate_init", ["chrono", "forget1", "uniform"])
def test_each_start_sets_only_its_gate_biases(cell, gate_init):
    before = _layer(cell)
    after = copy.deepcopy(before)
    init_gate_biases(after, gate_init, T_MAX, seed=3)
    memory = {"lstm": 1, "gru": 1, "gru_reset_before": 1}.get(cell)  # f (i f g o), z (r z n)
    changed = {  # (parameter kind, gate block) that the start sets
        "chrono": {(2, memory), (3, memory)} | ({(2, 0), (3, 0)} if cell == "lstm" else set()),
        "forget1": {(2, 1), (3, 1)} if cell == "lstm" else set(),
        "uniform": set(),
    }[gate_init]
    if memory is None:
        changed = set()
    for w_before, w_after in zip(before.all_weights, after.all_weights, strict=True):
        for kind, (a, b) in enumerate(zip(w_before, w_after, strict=True)):
            for k in range(a.shape[0] // H):
                same = torch.equal(_block(a, k), _block(b, k))
                assert same == ((kind, k) not in changed), (kind, k)
        if not changed:
            continue
        b_ih, b_hh = w_after[2], w_after[3]
        total = _block(b_ih, memory) + _block(b_hh, memory)
        assert torch.equal(_block(b_hh, memory), torch.zeros(H))
        if gate_init == "forget1":
            assert torch.equal(total, torch.ones(H))
            continue
        # chrono: keep f = sigmoid(b) = 1 - 1/tau of the state, tau uniform in [2, T_max]
        tau = 1.0 / (1.0 - torch.sigmoid(total.double()))
        assert bool(((tau >= 2.0 - 1e-9) & (tau <= T_MAX + 1e-9)).all()), tau
        assert len(set(tau.tolist())) == H  # one draw per unit
        if cell == "lstm":
            assert torch.equal(_block(b_ih, 0), -total) and torch.equal(
                _block(b_hh, 0), torch.zeros(H)
            )


def test_chrono_draws_come_from_the_seed():
    a, b, c = _layer("lstm"), _layer("lstm"), _layer("lstm")
    init_gate_biases(a, "chrono", T_MAX, seed=1)
    init_gate_biases(b, "chrono", T_MAX, seed=1)
    init_gate_biases(c, "chrono", T_MAX, seed=2)
    assert torch.equal(a.bias_ih_l0, b.bias_ih_l0) and not torch.equal(a.bias_ih_l0, c.bias_ih_l0)
    layer = _layer("gru")
    state = torch.get_rng_state()
    init_gate_biases(layer, "chrono", T_MAX, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # a generator of its own


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_before"])
def test_chrono_keeps_the_adding_gradient_over_200_steps(cell):
    """||dL/dh_0|| / ||dL/dh_199|| at initialisation, the loss at the last step: below
    1e-30 from torch.nn's start (each step keeps about half the state), above 1e-5 from
    chrono's, whose slowest units keep 1 - 1/220 per step."""
    problem = make_problem("adding", 200)
    batch = problem.sample_full(0, 8)
    ratios = {}
    for gate_init in ("uniform", "chrono"):
        config = ExperimentConfig(size=200, cell=cell, gate_init=gate_init)
        model = build_model(config, problem)
        norms = gradient_flow(model.rnn, batch.x, model.loss_fn(problem, batch)).norms[0, 0]
        ratios[gate_init] = float(norms[0] / norms[-1])
    assert ratios["uniform"] < 1e-30 and ratios["chrono"] > 1e-5, ratios


def test_the_defaults_take_an_lstm_off_the_trivial_solution(tmp_path):
    """The adding problem at T = 50, 960 Adam steps with the experiment's defaults: the
    held-out MSE falls below a quarter of the trivial solution's (predicting the mean),
    where torch.nn's start has not left it at 500,000 sequences
    (docs/vanishing_gradients.md, section 2). The seed fixes every weight and batch."""
    targets = make_problem("adding", 50).sample(np.random.default_rng(123), 20_000).target
    trivial = float(targets.double().var())  # the mean predictor's MSE, about 0.041
    config = ExperimentConfig(
        size=50,
        cell="lstm",
        max_sequences=960 * 32,
        max_seconds=600.0,  # the step budget binds, not the clock
        eval_every=960 * 32,
        eval_size=500,
    )
    result, _, _ = run_experiment(config, tmp_path)
    assert result.stopped in ("max_sequences", "solved") and result.sequences > 0
    assert result.final()["mse"] < 0.25 * trivial, (result.final(), trivial)
