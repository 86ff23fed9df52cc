"""The regularisers of the single-step cell modules (``rnnkit.nn.cell_modules``;
docs/cells.md, "Regularisers") and of the seq2seq decoder built on them.

A loop of cell steps against the layers' time-loop runner (``runner.run_layer``, itself
checked against the NumPy reference in tests/test_regularisers.py) with the very masks the
cell drew: outputs, final states and every gradient in float64, every cell kind, training
and evaluation. Then the masks' structure (one per sequence, replayed by a seed), the
refusals, and the decoder: its cells take the config's rates, one set of masks per batch
of target sequences, locked dropout, evaluation, ONNX.
"""

from __future__ import annotations

import pytest
import torch

from helpers import TOLERANCE, assert_rel_close
from registry import B, D, H, T
from rnnkit.nn import runner
from rnnkit.nn.cell_modules import CellNoise, GRUCell, LSTMCell, MinGRUCell
from rnnkit.nn.cells import CELLS
from rnnkit.nn.factory import cell_module
from rnnkit.nn.noise import StepNoise
from rnnkit.tasks.seq2seq.model import Seq2Seq, Seq2SeqConfig

F64 = TOLERANCE[torch.float64]


def _variants(cell: str) -> dict:
    """Every regulariser the cell has; the LSTMs' c zones out at its own rate."""
    recurrent = CELLS[cell].recurrent
    return {
        "recurrent_dropout": 0.3 if recurrent else 0.0,
        "weight_drop": 0.4 if recurrent else 0.0,
        "zoneout": 0.3,
        "zoneout_cell": 0.5 if CELLS[cell].num_states == 2 else None,
    }


def _cell(cell: str, training: bool, **variants):
    torch.manual_seed(0)
    module = cell_module(cell, D, H, variants=variants or _variants(cell)).double()
    return module.train(training)


def _loop(module, x, state0, noise):
    """The cell stepped over x [T, B, D] -> (out [T, B, H], final state tuple)."""
    state, outs = state0, []
    for t in range(x.shape[0]):
        new = module(x[t], state if len(state) == 2 else state[0], noise=noise)
        state = new if isinstance(new, tuple) else (new,)
        outs.append(state[0])
    return torch.stack(outs), state


def _zoneout_masks(module, seed: int, training: bool) -> tuple:
    """k [T, B, size] per state as the module's steps drew them: after ``draw_noise``, each
    step one Bernoulli(p) draw per zoned state in state order (the module docstring)."""
    rates = module.zoneout
    if not training:
        return tuple(torch.full((T, B, H), p, dtype=torch.float64) if p else None for p in rates)
    torch.manual_seed(seed)
    module.draw_noise(B)
    steps = [
        [torch.bernoulli(torch.full((B, H), p, dtype=torch.float64)) if p else None for p in rates]
        for _ in range(T)
    ]
    return tuple(
        torch.stack([s[i] for s in steps]) if rates[i] else None for i in range(len(rates))
    )


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_a_loop_of_cell_steps_matches_the_layer_runner_with_the_same_masks(cell, training):
    module = _cell(cell, training)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64, requires_grad=True)
    sizes = CELLS[cell].state_sizes(H)
    state0 = tuple(
        torch.randn(B, n, generator=g, dtype=torch.float64, requires_grad=True) for n in sizes
    )
    torch.manual_seed(7)
    noise = module.draw_noise(B)
    out, final = _loop(module, x, state0, noise)

    zoneout = _zoneout_masks(module, seed=7, training=training)
    recurrent, weight_mask = (noise.recurrent, noise.weight_hh) if noise else (None, None)
    if training and CELLS[cell].recurrent:
        for mask, p in ((recurrent, 0.3), (weight_mask, 0.4)):
            assert mask is not None and set(mask.unique().tolist()) == {0.0, 1 / (1 - p)}
    else:
        assert noise is None
    named = {kind: getattr(module, kind) for kind in module._kinds}
    w_ih, w_hh, *rest = module.cell.direction_weights(named)
    w_hh = w_hh if weight_mask is None else w_hh * weight_mask
    step_noise = StepNoise(recurrent, zoneout)
    ref_out, (ref_final,) = runner.run_layer(
        module.cell, x, None, [state0], [(w_ih, w_hh, *rest)], noise=[step_noise]
    )
    assert_rel_close(out, ref_out, F64, f"{cell} outputs")
    for s, r in zip(final, ref_final, strict=True):
        assert_rel_close(s, r, F64, f"{cell} final state")

    g2 = torch.Generator().manual_seed(2)
    dys = torch.randn(out.shape, generator=g2, dtype=torch.float64)
    inputs = [x, *state0, *module.parameters()]

    def grads(o, f):
        loss = (o * dys).sum() + sum(s.square().sum() for s in f)
        return torch.autograd.grad(loss, inputs)

    names = ["x", *"hc"[: len(sizes)], *named]
    for a, e, name in zip(grads(out, final), grads(ref_out, ref_final), names, strict=True):
        assert_rel_close(a, e, F64, f"{cell} d{name}")


@pytest.mark.parametrize("cell", ["gru", "lstm", "gru_ln"])
def test_the_sequences_masks_hold_over_its_steps_and_a_seed_replays_them(cell):
    """A unit that recurrent dropout drops never reaches W_hh at any step (its column of
    dL/dW_hh is exactly zero); the same seed draws the same masks."""
    module = _cell(cell, True, recurrent_dropout=0.5)
    x = torch.randn(T, 1, D, dtype=torch.float64)
    torch.manual_seed(3)
    noise = module.draw_noise(1)
    assert noise is not None and noise.recurrent is not None and noise.weight_hh is None
    state0 = (torch.zeros(1, H, dtype=torch.float64),) * CELLS[cell].num_states
    out, _ = _loop(module, x, state0, noise)
    (grad,) = torch.autograd.grad(out.sum(), module.weight_hh)
    dropped = noise.recurrent[0] == 0
    assert dropped.any() and (~dropped).any(), "the seed should drop some units, not all"
    assert not grad[:, dropped].any()
    assert grad[:, ~dropped].abs().sum(0).gt(0).all()
    torch.manual_seed(3)
    again = module.draw_noise(1)
    assert again is not None and torch.equal(again.recurrent, noise.recurrent)


def test_weight_drop_leaves_the_parameter_and_evaluation_draws_nothing():
    module = _cell("lstm", True, weight_drop=0.5)
    before = module.weight_hh.detach().clone()
    noise = module.draw_noise(B)
    assert noise is not None and noise.weight_hh is not None and noise.recurrent is None
    module(torch.randn(B, D, dtype=torch.float64), noise=noise)
    assert torch.equal(module.weight_hh, before)
    assert module.eval().draw_noise(B) is None
    plain = _cell("gru", True, recurrent_dropout=0.0, weight_drop=0.0, zoneout=0.2)
    assert plain.draw_noise(B) is None, "zoneout needs no masks from the caller"


def test_zoneout_in_evaluation_is_its_expectation():
    """h' = p h + (1 - p) h_new, deterministic."""
    zoned, plain = _cell("gru", False, zoneout=0.25), _cell("gru", False, zoneout=0.0)
    x, h = torch.randn(B, D, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    expected = 0.25 * h + 0.75 * plain(x, h)
    assert_rel_close(zoned(x, h), expected, F64, "zoneout's expectation")


def test_a_training_step_without_the_sequences_masks_is_one_error_naming_draw_noise():
    module = _cell("lstm", True, recurrent_dropout=0.2)
    with pytest.raises(ValueError, match=r"recurrent_dropout=0.2 .* cell.draw_noise\(batch_size\)"):
        module(torch.randn(B, D, dtype=torch.float64))
    module.eval()(torch.randn(B, D, dtype=torch.float64))  # evaluation needs none


def test_bad_masks_and_rates_are_one_error_naming_them():
    module = _cell("gru", True, recurrent_dropout=0.2)
    x = torch.randn(B, D, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"noise.recurrent must have shape \(3, 6\)"):
        module(x, noise=CellNoise(recurrent=torch.ones(B + 1, H, dtype=torch.float64)))
    with pytest.raises(TypeError, match="noise must be a CellNoise"):
        module(x, noise=torch.ones(B, H))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recurrent_dropout must be"):
        GRUCell(D, H, recurrent_dropout=1.0)
    with pytest.raises(ValueError, match="zoneout must be"):
        LSTMCell(D, H, zoneout=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="recurrent_dropout needs a recurrent product"):
        MinGRUCell(D, H, recurrent_dropout=0.1)


def test_the_modules_stay_torch_nn_drop_ins():
    """torch.nn's positional arguments keep their places; the regularisers are keywords,
    off by default, and the repr names only the ones set."""
    assert GRUCell(D, H, False).bias_ih is None
    with pytest.raises(TypeError):
        GRUCell(D, H, True, None, None, 0.1)  # type: ignore[misc]
    assert "zoneout" not in repr(LSTMCell(D, H))
    assert "zoneout=(0.1, 0.2)" in repr(LSTMCell(D, H, zoneout=(0.1, 0.2)))


# --- the seq2seq decoder ----------------------------------------------------------------


def _seq2seq(**variants) -> Seq2Seq:
    torch.manual_seed(0)
    config = Seq2SeqConfig(
        cell=variants.pop("cell", "lstm"),
        embedding_size=5,
        hidden_size=6,
        attention_size=7,
        decoder_layers=2,
        **variants,
    )
    return Seq2Seq(config, 9, 8).double()


def _batch():
    g = torch.Generator().manual_seed(4)
    source = torch.randint(4, 9, (3, 5), generator=g)
    target = torch.randint(4, 8, (3, 4), generator=g)
    return source, torch.tensor([5, 3, 2]), target


def test_the_decoders_cells_take_the_configs_regularisers():
    model = _seq2seq(recurrent_dropout=0.25, weight_drop=0.1, zoneout=0.2, zoneout_cell=0.3)
    for cell in model.cells:
        assert (cell.recurrent_dropout, cell.weight_drop, cell.zoneout) == (0.25, 0.1, (0.2, 0.3))
    assert model.encoder.recurrent_dropout == 0.25


@pytest.mark.parametrize("locked", [False, True], ids=["per-step", "locked"])
def test_a_training_pass_hands_one_set_of_masks_to_every_decoder_step(locked, monkeypatch):
    model = _seq2seq(recurrent_dropout=0.3, dropout=0.4, locked_dropout=locked).train()
    seen: list = []
    step = model.step

    def recording(previous, state, memory, noise=None):
        seen.append(noise)
        return step(previous, state, memory, noise)

    monkeypatch.setattr(model, "step", recording)
    source, lengths, target = _batch()
    logits, _ = model(source, lengths, target)
    assert len(seen) == target.shape[1] and all(n is seen[0] for n in seen)
    noise = seen[0]
    assert all(c is not None and c.recurrent is not None for c in noise.cells)
    masks = (noise.embedded, noise.between[1], noise.output)
    if locked:
        widths = (5, 6, model.output_width)
        for mask, width in zip(masks, widths, strict=True):
            assert mask is not None and mask.shape == (3, width)
            assert set(mask.unique().tolist()) == {0.0, 1 / (1 - 0.4)}
    else:
        assert masks == (None, None, None) and noise.between[0] is None
    logits.sum().backward()
    assert all(cell.weight_hh.grad is not None for cell in model.cells)


def test_the_decoder_in_evaluation_draws_nothing_and_is_deterministic():
    model = _seq2seq(recurrent_dropout=0.3, zoneout=0.2, dropout=0.4, locked_dropout=True).eval()
    source, lengths, target = _batch()
    assert model.draw_noise(3) is None
    first, _ = model(source, lengths, target)
    again, _ = model(source, lengths, target)
    assert torch.equal(first, again)


def test_a_decoder_step_in_training_without_its_masks_is_refused():
    model = _seq2seq(locked_dropout=True, dropout=0.2).train()
    source, lengths, _ = _batch()
    memory, state = model.encode(source, lengths)
    with pytest.raises(ValueError, match=r"noise=model.draw_noise\(batch_size\)"):
        model.step(torch.full((3,), 1), state, memory)


def test_onnx_refuses_a_decoder_with_zoneout_in_one_line():
    pytest.importorskip("onnx")
    from rnnkit.export.onnx import ExportError, onnx_model
    from rnnkit.tasks.seq2seq.export import Seq2SeqStep

    model = _seq2seq(cell="gru", zoneout=0.1).float().eval()
    with pytest.raises(ExportError, match=r"ONNX export has no zoneout \(the cell has zoneout="):
        onnx_model(Seq2SeqStep(model))
