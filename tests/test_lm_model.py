"""The language model: every cell, inputs, tying, initialisation, shapes, state carry."""

from __future__ import annotations

import pytest
import torch

from rnnkit.nn.factory import CELL_NAMES
from rnnkit.tasks.lm.model import LanguageModel, LMConfig

V = 11


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("input", ["embedding", "onehot"])
def test_shapes_and_state_carry_for_every_cell(cell, input):
    model = LanguageModel(
        LMConfig(cell=cell, input=input, hidden_size=6, num_layers=2, embedding_size=5), V
    )
    ids = torch.randint(0, V, (7, 3))  # [T, B]
    logits, state = model(ids)
    assert logits.shape == (7, 3, V)
    # Two windows with the state carried equal one window over the whole sequence.
    first, mid = model(ids[:4])
    second, _ = model(ids[4:], mid)
    torch.testing.assert_close(torch.cat([first, second]), logits)
    h = state[0] if isinstance(state, tuple) else state  # (h, c) or h
    assert h.shape == (2, 3, 6)


def test_tied_weights_share_one_matrix():
    model = LanguageModel(LMConfig(hidden_size=8, embedding_size=8, tie_weights=True), V)
    assert model.decoder.weight is model.embedding.weight


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"tie_weights": True}, r"embedding_size == --model.hidden_size, got 128 and 256"),
        ({"tie_weights": True, "input": "onehot"}, "needs --model.input embedding"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_model_configs(changes, message):
    with pytest.raises(ValueError, match=message):
        LanguageModel(LMConfig(**changes), V)


def test_vocabulary_of_one_is_refused():
    with pytest.raises(ValueError, match="needs at least 2"):
        LanguageModel(LMConfig(), 1)


def test_uniform_and_orthogonal_init():
    torch.manual_seed(0)
    uniform = LanguageModel(LMConfig(cell="gru", init="uniform", init_scale=0.05), V)
    assert all(float(p.detach().abs().max()) <= 0.05 for p in uniform.parameters())
    ortho = LanguageModel(LMConfig(cell="lstm", init="orthogonal", hidden_size=8), V)
    w = ortho.rnn.weight_hh_l0[8:16]  # the forget gate's block
    torch.testing.assert_close(w @ w.T, torch.eye(8), atol=1e-5, rtol=0)
    assert float(ortho.rnn.bias_ih_l0[8:16].detach().min()) == 1.0  # unit forget bias
