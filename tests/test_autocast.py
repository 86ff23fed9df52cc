"""The layers under ``torch.autocast("cpu", dtype=torch.bfloat16)``: they run, return the
dtypes torch.nn returns there and keep parameter gradients fp32.

- The composite path computes in the parameters' fp32: its results are the fp32 ones
  rounded to the returned dtype, every gradient equal to the fp32 one of the same
  (rounded) upstream gradient.
- The fused kernel computes its matrix products in bf16 (fp32 accumulation): its outputs
  and every gradient are within BF16_BOUND of the fp32 ones, normwise; but for the LSTM
  with ``proj_size``, whose products stay fp32 on either path (the rounded fp32 results).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import rnnkit
from helpers import rnnkit_class, run_in_length_mode, torch_class
from registry import FUSED_CELLS, B, D, H, T, layer_configs, make_layer, sample_lengths
from rnnkit.nn.kernels import precision as bf16_precision

BF16 = torch.bfloat16
CONFIGS = layer_configs(num_layers=(1, 2), dtypes=(torch.float32,))
BF16_BOUND = 8 * 2.0**-8
"""Normwise relative error of the fused kernel's bf16 products against fp32: 8 bf16 unit
roundoffs. Inputs, states and weights are rounded to bf16 (2^-8 relative each) before each
product, which accumulates in fp32; a wrong index or gate is off by O(1), not by this."""


def _run(module, config, x, lengths, hx, upstream_dtype, autocast: bool):
    """(outputs, gradients of a fixed linear loss w.r.t. x, the states and the weights);
    the loss weights are rounded to ``upstream_dtype`` first, as the backward of a cast
    from that dtype rounds them. ``autocast``: the forward (not the backward) under bf16
    autocast, as torch recommends."""
    with torch.autocast("cpu", dtype=BF16, enabled=autocast):
        outs, loss, leaves = _forward(module, config, x, lengths, hx, upstream_dtype)
    return outs, list(torch.autograd.grad(loss, leaves))


def _forward(module, config, x, lengths, hx, upstream_dtype):
    out, finals = run_in_length_mode(module, config, x, lengths, hx)
    g = torch.Generator().manual_seed(3)
    loss = torch.zeros(())
    for tensor in (out, *finals):
        weights = torch.randn(tensor.shape, generator=g).to(upstream_dtype).float()
        loss = loss + (tensor.float() * weights).sum()
    states = [] if hx is None else list(hx) if isinstance(hx, tuple) else [hx]
    outs = [out.detach(), *(f.detach() for f in finals)]
    return outs, loss, [x, *states, *module.parameters()]


def _inputs(config, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (B, T, D) if config.batch_first else (T, B, D)
    x = torch.randn(shape, generator=g).requires_grad_()
    lengths = sample_lengths(g) if config.lengths != "full" else None
    hx = None
    if config.initial_state:
        n = config.num_layers * (2 if config.bidirectional else 1)
        sizes = (config.proj_size or H, H)  # h's, c's
        parts = [torch.randn(n, B, size, generator=g).requires_grad_() for size in sizes]
        hx = tuple(parts) if config.cell == "lstm" else parts[0]
    return x, lengths, hx


def _returned(cell: str) -> torch.dtype:
    """torch.nn's output dtype under bf16 autocast for an fp32 input."""
    return torch.float32 if cell.startswith("gru") else BF16


@pytest.mark.parametrize("config", CONFIGS, ids=[c.id for c in CONFIGS])
def test_the_composite_path_under_autocast_gives_the_rounded_fp32_results(config, one_thread):
    layer = make_layer(rnnkit_class, config)
    returned = _returned(config.cell)
    x, lengths, hx = _inputs(config, seed=1)
    with rnnkit.use_backend("composite"):
        outs, grads = _run(layer, config, x, lengths, hx, returned, autocast=True)
        ref_outs, ref_grads = _run(layer, config, x, lengths, hx, returned, autocast=False)
    for i, (got, ref) in enumerate(zip(outs, ref_outs, strict=True)):
        assert got.dtype == returned, f"output {i}"
        assert torch.equal(got, ref.to(returned)), f"output {i}"
    for i, (got, ref) in enumerate(zip(grads, ref_grads, strict=True)):
        assert got.dtype == torch.float32, f"gradient {i}"
        assert torch.equal(got, ref), f"gradient {i}"


PROJECTED = [
    dataclasses.replace(c, proj_size=3)
    for c in layer_configs(cells=("lstm",), num_layers=(2,), dtypes=(torch.float32,))
    if c.bidirectional == c.initial_state == c.bias
]


@pytest.mark.parametrize("backend", ["composite", "fused"])
@pytest.mark.parametrize("config", PROJECTED, ids=[c.id for c in PROJECTED])
def test_the_projected_lstm_under_autocast_gives_the_rounded_fp32_results(
    config, backend, one_thread
):
    """Both paths keep its products fp32 under autocast (the fused kernel takes no bf16
    W_hr product): bf16 outputs that are the fp32 ones rounded, the fp32 gradients."""
    layer = make_layer(rnnkit_class, config)
    x, lengths, hx = _inputs(config, seed=1)
    with rnnkit.use_backend(backend):
        outs, grads = _run(layer, config, x, lengths, hx, BF16, autocast=True)
        ref_outs, ref_grads = _run(layer, config, x, lengths, hx, BF16, autocast=False)
    for i, (got, ref) in enumerate(zip(outs, ref_outs, strict=True)):
        assert got.dtype == BF16 and torch.equal(got, ref.to(BF16)), f"output {i}"
    for i, (got, ref) in enumerate(zip(grads, ref_grads, strict=True)):
        assert got.dtype == torch.float32 and torch.equal(got, ref), f"gradient {i}"


@pytest.mark.parametrize("config", CONFIGS, ids=[c.id for c in CONFIGS])
def test_the_fused_kernel_under_autocast_is_within_the_bf16_bound(config, one_thread):
    layer = make_layer(rnnkit_class, config)
    returned = _returned(config.cell)
    x, lengths, hx = _inputs(config, seed=1)
    with rnnkit.use_backend("fused"):
        outs, grads = _run(layer, config, x, lengths, hx, returned, autocast=True)
        ref_outs, ref_grads = _run(layer, config, x, lengths, hx, returned, autocast=False)
    # ReLU's derivative jumps at 0: a pre-activation that rounding moves across 0 changes
    # that unit's gradient by O(1), in any bf16 implementation. Its outputs are compared.
    # So does the minGRU/minLSTM candidate's g (1/4 below 0, 1 above): tests/test_min_cells.py
    # checks their gradients with candidates kept away from 0.
    smooth = config.cell not in ("rnn_relu", "mingru", "minlstm")
    for what, got, ref in [
        *((f"output {i}", g, r) for i, (g, r) in enumerate(zip(outs, ref_outs, strict=True))),
        *(
            (f"gradient {i}", g, r)
            for i, (g, r) in enumerate(zip(grads, ref_grads, strict=True))
            if smooth
        ),
    ]:
        assert got.dtype == (returned if what.startswith("output") else torch.float32), what
        error = float((got.double() - ref.double()).norm())
        assert error <= BF16_BOUND * float(ref.double().norm()) + 1e-6, (what, error)


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize("input_dtype", [torch.float32, BF16])
def test_the_dtypes_are_torch_nns(cell, input_dtype):
    """torch.nn's dtypes (checked against torch.nn where it runs): the GRU returns its
    input's dtype, the RNN and the LSTM bf16. On a CPU without bf16 instructions
    torch.nn.LSTM does not run under bf16 autocast at all (oneDNN has no primitive for it);
    rnnkit's LSTM does, and returns what torch.nn returns where it runs."""
    config = next(c for c in CONFIGS if c.cell == cell and c.lengths == "full")
    ours, theirs = make_layer(rnnkit_class, config), make_layer(torch_class, config)
    x = torch.randn(T, B, D).to(input_dtype)
    with torch.autocast("cpu", dtype=BF16):
        out, final = ours(x)
    finals = final if isinstance(final, tuple) else (final,)
    expected = input_dtype if cell == "gru" else BF16
    assert out.dtype == expected and all(f.dtype == expected for f in finals)
    try:
        with torch.autocast("cpu", dtype=BF16):
            ref_out, ref_final = theirs(x)
    except RuntimeError as error:
        _unless_torch_nn_lstm_cannot(cell, error)
        return
    ref_finals = ref_final if isinstance(ref_final, tuple) else (ref_final,)
    assert out.dtype == ref_out.dtype
    assert [f.dtype for f in finals] == [f.dtype for f in ref_finals]


EMULATION_CONFIGS = [
    c
    for c in CONFIGS
    if c.cell in FUSED_CELLS
    and c.num_layers == 2
    and c.bidirectional
    and c.initial_state
    and c.lengths != "full"
]


@pytest.mark.parametrize("config", EMULATION_CONFIGS, ids=[c.id for c in EMULATION_CONFIGS])
def test_emulated_bf16_products_are_the_native_ones(config, one_thread):
    """Where the CPU has no bf16 instructions the products are emulated: operands rounded
    to bf16, multiplied by the fp32 library. Forced here on any CPU: within the bf16 bound
    of fp32 and different from it (the rounding happened), and, where the CPU has bf16
    instructions, within 2 bf16 roundoffs of the native products, which differ only in
    rounding each product's result to bf16 too."""
    layer = make_layer(rnnkit_class, config)
    returned = _returned(config.cell)
    x, lengths, hx = _inputs(config, seed=4)
    native = bf16_precision.bf16_native()
    runs = {}
    try:
        for mode in (False, True) if native else (False,):
            bf16_precision.set_bf16_native(mode)
            with rnnkit.use_backend("fused"):
                runs[mode] = _run(layer, config, x, lengths, hx, returned, autocast=True)
    finally:
        bf16_precision.set_bf16_native(None)
    with rnnkit.use_backend("fused"):
        ref = _run(layer, config, x, lengths, hx, returned, autocast=False)
    # see the bound test above; the minimal cells' candidate g has a derivative that
    # jumps from 1/4 to 1 at 0, so a rounding that flips a pre-activation's sign moves
    # the gradient by O(1) there, as relu's does
    smooth = config.cell not in ("rnn_relu", "mingru", "minlstm")
    emulated = runs[False]
    for against, bound in [(ref, BF16_BOUND), *([(runs[True], 2 * 2.0**-8)] if native else [])]:
        for k, (got, want) in enumerate(
            zip([*emulated[0], *emulated[1]], [*against[0], *against[1]], strict=True)
        ):
            if k >= len(emulated[0]) and not smooth:
                break
            error = float((got.double() - want.double()).norm())
            assert error <= bound * float(want.double().norm()) + 1e-6, (k, error)
    assert not torch.equal(emulated[0][0].float(), ref[0][0].float())


def _unless_torch_nn_lstm_cannot(cell: str, error: RuntimeError) -> None:
    """Re-raise error unless it is torch.nn.LSTM refusing bf16 autocast, as it does on a
    CPU without bf16 instructions (oneDNN creates no LSTM primitive for it there)."""
    if bf16_precision.bf16_native() or cell != "lstm" or "primitive descriptor" not in str(error):
        raise error


def test_the_bf16_products_change_the_fused_results():
    """The bound test above cannot tell bf16 products from fp32 ones: this one can."""
    layer = rnnkit_class("gru")(D, H)
    x = torch.randn(T, B, D)
    with torch.no_grad(), rnnkit.use_backend("fused"):
        ref, _ = layer(x)
        with torch.autocast("cpu", dtype=BF16):
            got, _ = layer(x)
    assert got.dtype == torch.float32 and not torch.equal(got, ref)


def _stream(layer, xs, hx, *, general=False, autocast=True):
    """Feed xs [T, B, D] one step at a time, carrying the state: [outputs, final states].
    general=True takes the general path (lengths= of ones, which the fast path declines)."""
    outs = []
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16, enabled=autocast):
        for t in range(xs.shape[0]):
            lengths = torch.ones(xs.shape[1], dtype=torch.int64) if general else None
            out, hx = layer(xs[t : t + 1], hx, lengths=lengths)
            outs.append(out)
    return [torch.cat(outs), *(hx if isinstance(hx, tuple) else (hx,))]


def _stream_inputs(cell: str, num_layers: int, batch: int, steps: int = 5, size=(D, H)):
    g = torch.Generator().manual_seed(num_layers + batch)
    xs = torch.randn(steps, batch, size[0], generator=g)
    parts = [torch.randn(num_layers, batch, size[1], generator=g) for _ in range(2)]
    return xs, (tuple(parts) if cell == "lstm" else parts[0])


def _assert_within_bf16_bound(got, ref, what):
    for i, (g, r) in enumerate(zip(got, ref, strict=True)):
        error = float((g.double() - r.double()).norm())
        assert error <= BF16_BOUND * float(r.double().norm()) + 1e-6, (what, i, error)


@pytest.mark.parametrize("cell", FUSED_CELLS)
@pytest.mark.parametrize(
    "num_layers,batch,size", [(1, 1, (D, H)), (2, 3, (D, H)), (1, 2, (37, 70))]
)
def test_streaming_under_autocast_is_the_general_paths_bf16_step(
    cell, num_layers, batch, size, step_calls
):
    """Several steps with the state carried (bf16 states fed back, as a sampler does):
    torch.nn's dtypes, bf16 products (not the fp32 results), within the bf16 bound of the
    fp32 results, as the general path under autocast. 37 and 70 features exercise the
    kernel's vector loops and their tails."""
    options = {"nonlinearity": "relu"} if cell == "rnn_relu" else {}
    layer = rnnkit_class(cell)(size[0], size[1], num_layers=num_layers, **options).eval()
    assert layer.cell.name == cell
    xs, hx = _stream_inputs(cell, num_layers, batch, size=size)
    got = _stream(layer, xs, hx)
    assert len(step_calls) == xs.shape[0] * num_layers
    general = _stream(layer, xs, hx, general=True)
    assert len(step_calls) == xs.shape[0] * num_layers
    fp32 = _stream(layer, xs, hx, autocast=False)
    returned = _returned(cell)
    assert [t.dtype for t in got] == [returned] * len(got) == [t.dtype for t in general]
    _assert_within_bf16_bound(got, fp32, "streamed")
    _assert_within_bf16_bound(general, fp32, "general")
    assert not torch.equal(got[0], fp32[0].to(returned))  # the products really are bf16


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_streaming_under_autocast_returns_torch_nns_dtypes(cell, step_calls):
    config = next(c for c in CONFIGS if c.cell == cell and c.lengths == "full")
    ours, theirs = make_layer(rnnkit_class, config), make_layer(torch_class, config)
    xs, hx = _stream_inputs(cell, config.num_layers, B, steps=1)
    hx_bf16 = tuple(s.to(BF16) for s in hx) if cell == "lstm" else hx.to(BF16)
    for x, h in ((xs, hx), (xs.to(BF16), hx), (xs, hx_bf16)):  # then the returned states
        with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
            out, h = ours(x, h)
            out, h = ours(x, h)
            try:
                ref_out, ref_h = theirs(x, h)
                ref_out, ref_h = theirs(x, ref_h)
            except RuntimeError as error:  # then the dtypes torch.nn returns elsewhere
                _unless_torch_nn_lstm_cannot(cell, error)
                ref_out, ref_h = out.new_empty(0, dtype=BF16), tuple(s.to(BF16) for s in h)
        finals = h if isinstance(h, tuple) else (h,)
        ref_finals = ref_h if isinstance(ref_h, tuple) else (ref_h,)
        assert [out.dtype, *(f.dtype for f in finals)] == [
            ref_out.dtype,
            *(f.dtype for f in ref_finals),
        ]
    assert step_calls


def _edit_in_place(layer):
    with torch.no_grad():
        layer.weight_hh_l0.mul_(-1.0)


def _load_other_weights(layer):
    layer.load_state_dict(type(layer)(D, H).state_dict())


def _optimiser_step(layer):
    x, h = torch.randn(3, B, D), torch.randn(1, B, H)
    out, _ = layer(x, (h, h) if isinstance(layer, rnnkit.LSTM) else h)
    out.square().sum().backward()
    torch.optim.SGD(layer.parameters(), lr=1.0).step()


def _new_parameter(layer):
    layer.weight_ih_l0 = torch.nn.Parameter(torch.randn_like(layer.weight_ih_l0))


@pytest.mark.parametrize(
    "edit", [_edit_in_place, _load_other_weights, _optimiser_step, _new_parameter]
)
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("autocast", [True, False])
def test_streaming_sees_every_weight_change(cell, edit, autocast, step_calls):
    """The streaming step keeps the weights (and under autocast their bf16 copies) between
    calls: after an edit, its results are the edited layer's, not the kept ones'."""
    layer = rnnkit_class(cell)(D, H).eval()
    xs, hx = _stream_inputs(cell, 1, B)
    before = _stream(layer, xs, hx, autocast=autocast)  # keeps the weights
    edit(layer)
    got = _stream(layer, xs, hx, autocast=autocast)
    general = _stream(layer, xs, hx, general=True, autocast=autocast)
    assert len(step_calls) == 2 * xs.shape[0]
    _assert_within_bf16_bound(got, general, "after the edit")
    _assert_within_bf16_bound(got, _stream(layer, xs, hx, autocast=False), "after the edit")
    change = float((general[0].double() - before[0].double()).norm())
    assert change > 10 * BF16_BOUND * float(general[0].double().norm())  # the test can tell


def test_streaming_under_autocast_leaves_bad_input_to_the_general_paths_errors(step_calls):
    layer = rnnkit.LSTM(D, H).eval()
    x, h = torch.randn(1, B, D), torch.zeros(1, B + 1, H)
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        with pytest.raises(ValueError, match="h_0"):
            layer(x, (h, h))
        with pytest.raises(TypeError, match="tuple"):
            layer(x, h)
    assert not step_calls


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_language_model_trains_in_bf16_to_its_fp32_loss(cell, tmp_path, one_thread):
    """--trainer.precision bf16: the same run's validation loss within 0.01 nats of fp32's
    (the recurrent layers compute in fp32 inside; the LSTM's outputs are rounded to bf16
    between layers, as torch.nn's are)."""
    from rnnkit.tasks.lm import api as lm

    (tmp_path / "t.txt").write_text(lm.default_corpus()[:12000], encoding="utf-8")
    losses = {}
    for precision in ("fp32", "bf16"):
        overrides = (
            *("--data.text", str(tmp_path / "t.txt"), "--model.cell", cell),
            *("--model.hidden_size", "32", "--model.embedding_size", "16"),
            *("--trainer.epochs", "1", "--trainer.progress", "false"),
            *("--trainer.precision", precision, "--trainer.out", str(tmp_path / precision)),
        )
        run = lm.train(lm.configure(overrides=overrides), log=str)
        losses[precision] = run.result.valid_loss
        saved = lm.load(run.out_dir)[2]
        assert saved.trainer.precision == precision  # kept in the run for --resume
    assert abs(losses["bf16"] - losses["fp32"]) < 0.01, losses


def test_streaming_follows_the_backend_and_the_autocast_dtype(step_calls):
    """The streaming plan is kept between calls, but not across a backend switch, and a
    float16 autocast (no bf16 copies for it) leaves the call to the general path."""
    layer = rnnkit.GRU(D, H).eval()
    x, h = torch.randn(1, B, D), torch.randn(1, B, H)
    with torch.no_grad():
        first = layer(x, h)
        assert len(step_calls) == 1
        with rnnkit.use_backend("composite"):
            composite = layer(x, h)
        assert len(step_calls) == 1
        torch.testing.assert_close(composite, first)
        layer(x, h)
        assert len(step_calls) == 2
        with torch.autocast("cpu", dtype=torch.float16):
            layer(x, h)
        assert len(step_calls) == 2
        with torch.autocast("cpu", dtype=BF16):
            layer(x, h)
        assert len(step_calls) == 3
