"""The torch.nn contract beyond the parity matrix: state_dicts both ways, streaming,
single-step cells, unbatched input, dropout, forget-gate bias, the backend switch."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from helpers import assert_rel_close, rnnkit_class, torch_class
from registry import ALL_CELLS, TORCH_CELLS
from rnnkit.nn import kernels
from rnnkit.nn.factory import CELL_NAMES, cell_module, recurrent_layer


def _kwargs(cell: str) -> dict:
    return {"nonlinearity": cell.removeprefix("rnn_")} if cell.startswith("rnn_") else {}


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_state_dict_loads_both_ways(cell: str):
    kwargs = {"bidirectional": True, "dtype": torch.float64, **_kwargs(cell)}
    theirs = torch_class(cell)(4, 5, 2, **kwargs)
    ours = rnnkit_class(cell)(4, 5, 2, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    assert_rel_close(ours(x)[0].detach(), theirs(x)[0].detach(), 1e-12)
    torch.manual_seed(1)
    ours.reset_parameters()
    theirs.load_state_dict(ours.state_dict())
    assert_rel_close(ours(x)[0].detach(), theirs(x)[0].detach(), 1e-12)


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_streaming_continues_exactly(cell: str):
    """Calling the layer again with the returned state equals one long call."""
    layer = rnnkit_class(cell)(3, 4, 2, dtype=torch.float64, **_kwargs(cell))
    x = torch.randn(9, 2, 3, dtype=torch.float64)
    whole, final = layer(x)
    state, pieces = None, []
    for chunk in (x[:4], x[4:5], x[5:]):
        out, state = layer(chunk, state)
        pieces.append(out)
    assert_rel_close(torch.cat(pieces).detach(), whole.detach(), 1e-14)
    finals = final if isinstance(final, tuple) else (final,)
    states = state if isinstance(state, tuple) else (state,)
    for a, b in zip(states, finals, strict=True):
        assert_rel_close(a.detach(), b.detach(), 1e-14)


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_cell_modules_match_torch(cell: str):
    name = {"rnn_tanh": "RNNCell", "rnn_relu": "RNNCell", "gru": "GRUCell", "lstm": "LSTMCell"}
    theirs = getattr(torch.nn, name[cell])(3, 5, dtype=torch.float64, **_kwargs(cell))
    ours = getattr(rnnkit, name[cell])(3, 5, dtype=torch.float64, **_kwargs(cell))
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 3, dtype=torch.float64)
    states = [torch.randn(4, 5, dtype=torch.float64) for _ in range(2 if cell == "lstm" else 1)]
    hx = tuple(states) if cell == "lstm" else states[0]
    for args in ((x,), (x, hx), (x[0], tuple(s[0] for s in states) if cell == "lstm" else hx[0])):
        a, b = ours(*args), theirs(*args)
        for u, v in zip(*(r if isinstance(r, tuple) else (r,) for r in (a, b)), strict=True):
            assert u.shape == v.shape
            assert_rel_close(u.detach(), v.detach(), 1e-14)


def test_reset_before_gru_cell_is_one_layer_step():
    cell = rnnkit.GRUCell(3, 4, reset_after=False, dtype=torch.float64)
    layer = rnnkit.GRU(3, 4, reset_after=False, dtype=torch.float64)
    layer.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    _, h_n = layer(x[None], h[None])
    assert_rel_close(cell(x, h).detach(), h_n[0].detach(), 1e-14)


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_the_factory_cell_module_is_one_step_of_its_layer(cell: str):
    step = cell_module(cell, 3, 4).double()
    layer = recurrent_layer(cell, 3, 4).double()
    assert step.cell is layer.cell is rnnkit.nn.CELLS[cell]
    layer.load_state_dict({k + "_l0": v for k, v in step.state_dict().items()})
    x = torch.randn(2, 3, dtype=torch.float64)
    states = tuple(torch.randn(2, 4, dtype=torch.float64) for _ in range(step.cell.num_states))
    hx = states if len(states) == 2 else states[0]
    ours = step(x, hx)
    _, final = layer(x[None], tuple(s[None] for s in states) if len(states) == 2 else hx[None])
    for u, v in zip(*(r if isinstance(r, tuple) else (r,) for r in (ours, final)), strict=True):
        assert_rel_close(u.detach(), v[0].detach(), 1e-14)


def test_the_factory_names_the_cells_it_knows():
    assert CELL_NAMES == tuple(rnnkit.nn.CELLS)
    for make in (cell_module, recurrent_layer):
        with pytest.raises(ValueError, match=r"cell must be one of rnn_tanh, .*got 'lstn'"):
            make("lstn", 3, 4)
    lstm = cell_module("lstm", 3, 4, unit_forget_bias=True)
    assert torch.equal(lstm.bias_ih[4:8], torch.ones(4))
    assert torch.equal(lstm.bias_hh[4:8], torch.zeros(4))
    assert cell_module("gru", 3, 4, bias=False).bias_ih is None


@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_unbatched_input_matches_torch(cell: str):
    kwargs = {"bidirectional": True, "dtype": torch.float64, **_kwargs(cell)}
    theirs = torch_class(cell)(3, 4, 2, **kwargs)
    ours = rnnkit_class(cell)(3, 4, 2, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 3, dtype=torch.float64)
    (a, fa), (b, fb) = ours(x), theirs(x)
    assert a.shape == b.shape == (5, 8)
    assert_rel_close(a.detach(), b.detach(), 1e-12)
    for u, v in zip(*(f if isinstance(f, tuple) else (f,) for f in (fa, fb)), strict=True):
        assert u.shape == v.shape == (4, 4)


def test_dropout_between_layers_only_in_training():
    layer = rnnkit.LSTM(3, 8, 2, dropout=0.5)
    x = torch.randn(4, 2, 3)
    layer.eval()
    assert torch.equal(layer(x)[0], layer(x)[0])
    layer.train()
    torch.manual_seed(0)
    a = layer(x)[0]
    torch.manual_seed(1)
    assert not torch.equal(a, layer(x)[0])
    single = rnnkit.LSTM(3, 8, 1, dropout=0.5).train()  # no layer above: nothing to drop
    assert torch.equal(single(x)[0], single(x)[0])


def test_unit_forget_bias():
    layer = rnnkit.LSTM(3, 4, 2, unit_forget_bias=True, bidirectional=True)
    for name, p in layer.named_parameters():
        if name.startswith("bias_ih"):
            assert torch.all(p[4:8] == 1.0)
        if name.startswith("bias_hh"):
            assert torch.all(p[4:8] == 0.0)
    cell = rnnkit.LSTMCell(3, 4, unit_forget_bias=True)
    assert torch.all(cell.bias_ih[4:8] + cell.bias_hh[4:8] == 1.0)


def test_backend_switch():
    assert rnnkit.get_backend() in kernels.BACKENDS
    with rnnkit.use_backend("composite"):
        assert rnnkit.get_backend() == "composite"
        assert (
            kernels.select(rnnkit.GRU(2, 2).cell, torch.zeros(1, 1, 2)) is kernels.runner.run_layer
        )
    with pytest.raises(ValueError, match=r"backend must be one of .*'scan'.*got 'cudnn'"):
        rnnkit.set_backend("cudnn")


def test_a_kernels_name_forces_that_kernel_alone():
    """ "scan" runs the parallel scan where "fused" (and "auto") take the compiled CPU
    kernel; a kernel forced on inputs it does not support is one error naming it."""
    x = torch.zeros(3, 1, 2)
    min_gru, projected = rnnkit.MinGRU(2, 3).cell, rnnkit.LSTM(2, 3, proj_size=2).cell
    with rnnkit.use_backend("scan"):
        assert rnnkit.get_backend() == "scan"
        assert kernels.select(min_gru, x) is kernels.scan.run_layer
        assert kernels.select_step(min_gru, x) is kernels.scan.step
        with pytest.raises(RuntimeError, match=r"backend 'scan' was forced but it does not"):
            kernels.select(rnnkit.GRU(2, 3).cell, x)
    with rnnkit.use_backend("fused_cpu"), pytest.raises(RuntimeError, match=r"size=2.*float16"):
        kernels.select(projected, x.half())


def test_forcing_fused_without_a_kernel_is_an_error(monkeypatch):
    monkeypatch.setattr(kernels, "_kernels", [])
    layer = rnnkit.GRU(2, 3)
    with rnnkit.use_backend("fused"), pytest.raises(RuntimeError, match="no fused kernel"):
        layer(torch.zeros(2, 1, 2))


def test_repr_names_the_cell():
    assert "gru_reset_before" in repr(rnnkit.GRU(2, 3, reset_after=False, num_layers=2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_composite_on_cuda_matches_torch(cell: str):
    theirs = torch_class(cell)(3, 4, 2, bidirectional=True, **_kwargs(cell)).cuda().double()
    ours = rnnkit_class(cell)(3, 4, 2, bidirectional=True, **_kwargs(cell)).cuda().double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(5, 2, 3, device="cuda", dtype=torch.float64)
    lengths = torch.tensor([5, 3])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths)
    a, b = ours(packed)[0], theirs(packed)[0]
    assert_rel_close(a.data.detach().cpu(), b.data.detach().cpu(), 1e-10)
