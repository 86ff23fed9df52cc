"""Bad arguments fail at the boundary with a message naming the value."""

from __future__ import annotations

import pytest
import torch

import rnnkit


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_size": 0, "hidden_size": 4}, "input_size must be a positive integer, got 0"),
        ({"input_size": 3, "hidden_size": -2}, "hidden_size must be a positive integer, got -2"),
        ({"input_size": 3, "hidden_size": 4, "num_layers": 0}, "num_layers must be a positive"),
        ({"input_size": 3, "hidden_size": 4.5}, "hidden_size must be a positive integer, got 4.5"),
        (
            {"input_size": 3, "hidden_size": 4, "dropout": 1.0},
            r"dropout must be a number in \[0, 1\)",
        ),
        ({"input_size": 3, "hidden_size": 4, "dropout": -0.1}, "got -0.1"),
    ],
)
def test_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rnnkit.GRU(**kwargs)


def test_bad_nonlinearity_and_proj_size():
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        rnnkit.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"proj_size must be .* \[1, 4\), got 4"):
        rnnkit.LSTM(3, 4, proj_size=4)  # torch.nn's bound: 0 < proj_size < hidden_size


@pytest.fixture
def gru():
    return rnnkit.GRU(3, 4, num_layers=2)


def test_input_rank_and_features(gru):
    with pytest.raises(ValueError, match=r"input must be 3-D \(\[T, B, D\]\).*got shape \(3,\)"):
        gru(torch.zeros(3))
    with pytest.raises(ValueError, match=r"5 features but the layer expects input_size=3$"):
        gru(torch.zeros(2, 1, 5))
    with pytest.raises(ValueError, match=r"no time steps \(T = 0\)$"):
        gru(torch.zeros(0, 1, 3))
    with pytest.raises(TypeError, match=r"input must be a torch\.Tensor, got list"):
        gru([[0.0, 0.0, 0.0]])
    with pytest.raises(TypeError, match=r"floating-point tensor, got dtype torch\.int64"):
        gru(torch.zeros(2, 1, 3, dtype=torch.int64))


def test_lengths(gru):
    x = torch.zeros(4, 2, 3)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\].*max 5"):
        gru(x, lengths=[5, 2])
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 4\].*min -1"):
        gru(x, lengths=[-1, 2])
    with pytest.raises(ValueError, match="lengths has 3 entries but the batch has 2"):
        gru(x, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="lengths must be a 1-D sequence of integers"):
        gru(x, lengths=[1.5, 2.0])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, [4, 2])
    with pytest.raises(ValueError, match="not a PackedSequence"):
        gru(packed, lengths=[4, 2])


def test_zero_lengths_keep_the_initial_state(gru):
    x = torch.randn(4, 3, 3)
    h0 = torch.randn(2, 3, 4)
    out, h_n = gru(x, h0, lengths=[4, 0, 2])
    assert not out[:, 1].any()
    assert torch.equal(h_n[:, 1], h0[:, 1])


def test_state_shapes(gru):
    x = torch.zeros(4, 2, 3)
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 2, 4\), got \(1, 2, 4\)"):
        gru(x, torch.zeros(1, 2, 4))
    with pytest.raises(
        TypeError, match=r"h_0 has dtype torch\.float64 but the input has torch\.float32"
    ):
        gru(x, torch.zeros(2, 2, 4, dtype=torch.float64))
    lstm = rnnkit.LSTM(3, 4)
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        lstm(x, torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"c_0 must have shape \(1, 2, 4\), got \(1, 2, 5\)"):
        lstm(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 5)))


def test_cell_module_inputs():
    cell = rnnkit.LSTMCell(3, 4)
    with pytest.raises(ValueError, match=r"input must be \[B, 3\] or \[3\], got shape \(2, 5\)"):
        cell(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"h must have shape \(2, 4\), got \(2, 3\)"):
        cell(torch.zeros(2, 3), (torch.zeros(2, 3), torch.zeros(2, 4)))
