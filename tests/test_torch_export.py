"""The fused kernels as torch.library custom operators, and what they make possible:
``torch.export`` of the layers and the task models with dynamic T and B (saved, loaded
back, and run at other sizes against the eager module), and ``torch.compile`` with
``fullgraph=True`` over a training step, the same loss and gradients as eager.

Eager is the oracle throughout: the eager layers are checked against the NumPy reference
and torch.nn elsewhere (test_kernels.py, test_parity_torch.py)."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils import _pytree

import rnnkit
from helpers import rnnkit_class
from registry import FUSED_CELLS, KERNEL_CELLS, D, H, LayerConfig, layer_configs
from rnnkit.export import load_torch_export, to_torch_export
from rnnkit.nn.cells import CELLS
from rnnkit.nn.kernels import fused, ops

pytestmark = pytest.mark.skipif(fused.load() is None, reason="the fused extension did not build")

ATOL = RTOL = 1e-5  # exported against eager, fp32
SIZES = ((7, 2), (3, 6))  # (T, B) other than the example's (5, 3)


def _assert_close(actual, expected, what: str, atol: float = ATOL, rtol: float = RTOL) -> None:
    got, want = _pytree.tree_leaves(actual), _pytree.tree_leaves(expected)
    assert len(got) == len(want), f"{what}: {len(got)} tensors, expected {len(want)}"
    for k, (a, e) in enumerate(zip(got, want, strict=True)):
        assert a.shape == e.shape, f"{what} #{k}: shape {tuple(a.shape)} != {tuple(e.shape)}"
        where = f"{what} #{k}"
        torch.testing.assert_close(a, e, atol=atol, rtol=rtol, msg=lambda m, w=where: f"{w}: {m}")


# ---- the operators -------------------------------------------------------------------


P = 2  # "lstm_proj": the LSTM with proj_size P < H, its W_hr [P, H] in the norms' place


def _op_args(cell_name, dirs, lengths, dtype=torch.float64, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    projected = cell_name == "lstm_proj"
    cell = CELLS["lstm" if projected else cell_name]
    G, T, B, R = cell.num_gates * H, 4, 3, P if projected else H

    def leaf(*shape):
        return (torch.randn(*shape, generator=g, dtype=dtype) / H**0.5).requires_grad_()

    code = ops.CELL_CODES[cell.name]
    c0 = [leaf(B, H) for _ in range(dirs)] if cell.num_states == 2 else []
    biases = [[leaf(G) for _ in range(dirs)] if bias else [] for _ in range(2)]
    if cell.recurrent:
        w_hh = [leaf(G, R) for _ in range(dirs)]
    else:  # minGRU, minLSTM: the [0, H] placeholder (fused.recurrent_weight), no b_hh
        w_hh, biases[1] = [torch.empty(0, H, dtype=dtype) for _ in range(dirs)], []
    return (
        code,
        leaf(T, B, D),
        None if lengths is None else torch.tensor(lengths),
        [leaf(B, R) for _ in range(dirs)],
        c0,
        [leaf(G, D) for _ in range(dirs)],
        w_hh,
        *biases,
        [leaf(P, H) for _ in range(dirs)] if projected else [],  # W_hr; no layer norms
        [],  # no regulariser noise
        True,
        False,
    )


def _n_out(cell: str) -> int:
    """The outputs of a two-direction layer call before its saved buffers."""
    return 1 + 2 * CELLS[cell.removesuffix("_proj")].num_states


@pytest.mark.parametrize("cell", KERNEL_CELLS)
@pytest.mark.parametrize("lengths", [None, [4, 0, 2]], ids=["full", "lengths"])
def test_the_layer_operator_passes_torch_library_opcheck(cell, lengths):
    """Schema, fake implementation (every output's shape and dtype, the saved buffers
    included), autograd registration and, for full rows, AOTAutograd's trace against the
    real kernel. With lengths, the saved state buffers hold unwritten rows of finished
    sequences (never read), so the AOT comparison of those outputs is left out; the
    layers' compile test below compares what a caller sees."""
    args = _op_args(cell, 2, lengths, bias=lengths is None)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    if lengths is None:
        utils += ("test_aot_dispatch_dynamic",)
    torch.library.opcheck(ops.fused_layer, args, test_utils=utils)


@pytest.mark.parametrize("cell", ["gru", "lstm", "minlstm", "lstm_proj"])
def test_the_backward_and_step_operators_pass_opcheck(cell):
    """(The projected LSTM has no compiled step: its streaming step is the cell's own.)"""
    args = _op_args(cell, 2, None)
    out = ops.fused_layer(*args)
    code, x, _, h0, c0, w_ih, w_hh, b_ih, b_hh, norms = args[:10]
    n_out = _n_out(cell)
    dout, dh = torch.randn_like(out[0]), [torch.randn_like(h) for h in h0]
    dc = [torch.randn_like(c) for c in c0]
    saved = [t.detach() for t in out[n_out:]]
    detached = [[t.detach() for t in part] for part in (w_ih, w_hh)]
    backward_args = (
        code,
        x.detach(),
        None,
        dout,
        dh,
        dc,
        saved,
        [t.detach() for t in norms],  # W_hr, or no layer norms
        [],  # no regulariser noise
        *detached,
        True,
        bool(b_hh),  # (the minimal cells have none)
        True,
        False,
    )
    torch.library.opcheck(ops.fused_layer_backward, backward_args)
    if cell == "lstm_proj":
        return
    state = [t.detach()[None] for t in (h0[0], *c0[:1])]
    step_args = (code, x.detach()[:1], state[0], state[1] if c0 else None)
    step_args += (*(t[0].detach() if t else None for t in (w_ih, w_hh, b_ih, b_hh)), False, False)
    torch.library.opcheck(ops.fused_step, step_args)


@pytest.mark.parametrize("cell", KERNEL_CELLS)
def test_eager_path_and_dispatched_operator_agree_bit_for_bit(cell):
    """``ops.layer`` skips the dispatcher in eager mode; the operator (what traced code
    runs) must give the same outputs and gradients."""
    args = _op_args(cell, 2, [4, 1, 3], dtype=torch.float32)
    leaves = [t for t in _pytree.tree_leaves(args[1:10]) if t.requires_grad]
    results = []
    for run in (ops.layer, ops.fused_layer):
        out = run(*args)[: _n_out(cell)]
        loss = sum((o * torch.linspace(-1, 1, o.numel()).view(o.shape)).sum() for o in out)
        results.append([t.detach() for t in out] + list(torch.autograd.grad(loss, leaves)))
    for a, e in zip(*results, strict=True):
        assert torch.equal(a, e)


# ---- torch.export of the layers ------------------------------------------------------

EXPORT_CONFIGS = [  # the fused cells: the parallel scan's chunk loop fixes T (test_min_cells)
    c
    for c in layer_configs(
        cells=FUSED_CELLS, num_layers=(1, 2), lengths=("full", "padded"), dtypes=(torch.float32,)
    )
    if c.bidirectional == c.batch_first == c.initial_state == (c.lengths == "padded") != c.bias
    and c.num_layers == 1 + c.bidirectional
]
EXPORT_CONFIGS += [dataclasses.replace(c, proj_size=P) for c in EXPORT_CONFIGS if c.cell == "lstm"]
"""Per cell (and the projected LSTM), two configurations that between them turn every
option on and off: 1 layer, one direction, time-major, no state, full rows, biases; and 2
layers, both directions, batch_first, a given state, lengths, no biases."""


def _layer_inputs(config: LayerConfig, T: int, B: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((B, T, D) if config.batch_first else (T, B, D), generator=g)
    args: tuple = (x,)
    if config.initial_state:
        n = config.num_layers * (2 if config.bidirectional else 1)
        sizes = (config.proj_size or H, H)[: CELLS[config.cell].num_states]  # h's, c's
        parts = tuple(torch.randn(n, B, size, generator=g) for size in sizes)
        args += (parts if len(parts) == 2 else parts[0],)
    kwargs = {}
    if config.lengths == "padded":
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        kwargs["lengths"] = lengths
    return args, kwargs


@pytest.mark.parametrize("config", EXPORT_CONFIGS, ids=lambda c: c.id)
def test_exported_layer_round_trips_and_runs_at_other_sizes(config, tmp_path):
    torch.manual_seed(0)
    layer = rnnkit_class(config.cell)(D, H, **config.layer_kwargs())
    args, kwargs = _layer_inputs(config, 5, 3, seed=0)
    path = tmp_path / "layer.pt2"
    to_torch_export(layer, args, path, example_kwargs=kwargs)  # default axes: T, B
    program = load_torch_export(path)
    graph = str(program.graph)
    assert "rnnkit.fused_layer" in graph and "aten.linear" not in graph  # one node a layer
    for seed, (T, B) in enumerate(SIZES, start=1):
        args, kwargs = _layer_inputs(config, T, B, seed)
        with torch.no_grad():
            expected = layer(*args, **kwargs)
        _assert_close(program.module()(*args, **kwargs), expected, f"{config.id} T={T} B={B}")


def test_the_composite_path_exports_with_a_fixed_T():
    """Its time loop unrolls while tracing, so T is fixed (docs/export.md); B stays free."""
    layer = rnnkit.GRU(D, H, bidirectional=True)
    with rnnkit.use_backend("composite"):
        program = to_torch_export(layer, (torch.randn(5, 3, D),), dynamic=(".B.",))
    assert "rnnkit.fused_layer" not in str(program.graph)
    x = torch.randn(5, 6, D)
    with torch.no_grad():
        _assert_close(program.module()(x), layer(x), "composite, B=6")


def test_an_exported_layer_checks_lengths_when_it_runs(tmp_path):
    layer = rnnkit.GRU(D, H)
    lengths = torch.tensor([5, 2, 3])
    program = to_torch_export(layer, (torch.randn(5, 3, D),), example_kwargs={"lengths": lengths})
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[0, T\]"):
        program.module()(torch.randn(4, 3, D), lengths=torch.tensor([4, 5, 1]))


def test_an_exported_program_differentiates_when_exported_with_autograd():
    """torch.export itself, with grad enabled: the graph keeps the training call, and the
    operator's registered autograd gives eager's gradients."""
    layer = rnnkit.LSTM(D, H, num_layers=2)
    T, B = torch.export.Dim("T", min=1), torch.export.Dim("B", min=1)
    program = torch.export.export(layer, (torch.randn(5, 3, D),), dynamic_shapes=({0: T, 1: B},))
    module = program.module()
    x = torch.randn(6, 2, D, requires_grad=True)
    grads = []
    for run in (module, layer):
        out, (h, c) = run(x)
        loss = out.square().sum() + h.sum() + c.sum()
        params = dict(sorted(run.named_parameters()))
        values = torch.autograd.grad(loss, [x, *params.values()])
        grads.append(dict(zip(["x", *params], values, strict=True)))
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        _assert_close(grads[0][name], grads[1][name], name, atol=1e-6)


# ---- torch.export of the task models -------------------------------------------------

V = 20


class _Emissions(nn.Module):
    """The tagger's emissions as a forward (what a caller exports)."""

    def __init__(self, tagger) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, words, chars, lengths):
        return self.tagger.emissions(words, chars, lengths)


def _task_cases():
    from rnnkit.tasks.classify.config import ClassifierConfig
    from rnnkit.tasks.classify.model import Classifier
    from rnnkit.tasks.forecast.config import ForecasterConfig
    from rnnkit.tasks.forecast.model import Forecaster
    from rnnkit.tasks.lm.config import LMConfig
    from rnnkit.tasks.lm.model import LanguageModel
    from rnnkit.tasks.music.config import MusicConfig
    from rnnkit.tasks.music.model import MusicModel
    from rnnkit.tasks.seq2seq.config import Seq2SeqConfig
    from rnnkit.tasks.seq2seq.model import Seq2Seq
    from rnnkit.tasks.tag.config import TaggerConfig
    from rnnkit.tasks.tag.model import Tagger

    def ids(*shape, g, low=0):
        return torch.randint(low, V, shape, generator=g)

    def lengths(T, B, g):
        return torch.randint(1, T + 1, (B,), generator=g)

    small = {"hidden_size": 8, "embedding_size": 6}
    return {
        "lm-lstm": (
            lambda: LanguageModel(LMConfig(cell="lstm", **small), V),
            lambda T, B, g: (ids(T, B, g=g),),
            ("TB",),
        ),
        "lm-gru-state": (
            lambda: LanguageModel(LMConfig(cell="gru", **small), V),
            lambda T, B, g: (ids(T, B, g=g), torch.randn(2, B, 8, generator=g)),
            ("TB", ".B."),
        ),
        "classifier": (
            lambda: Classifier(ClassifierConfig(pooling="attention", **small), V, 3),
            lambda T, B, g: (ids(B, T, g=g, low=1), lengths(T, B, g)),
            ("BT", "B"),
        ),
        "tagger-emissions": (
            lambda: _Emissions(
                Tagger(TaggerConfig(char_embedding_size=4, char_hidden_size=3, **small), V, 9, 5)
            ),
            lambda T, B, g: (
                ids(B, T, g=g, low=1),
                torch.randint(0, 9, (B, T, 4), generator=g),  # words of 0 to 4 characters
                lengths(T, B, g),
            ),
            ("BT", "BT.", "B"),
        ),
        "forecaster": (
            lambda: Forecaster(ForecasterConfig(hidden_size=8, gaussian=True), 3),
            lambda T, B, g: (torch.randn(B, T, 3, generator=g),),
            ("BT.",),
        ),
        "music": (
            lambda: MusicModel(MusicConfig(hidden_size=8, low=60, high=71)),
            lambda T, B, g: (torch.randn(T, B, 12, generator=g).gt(0).float(),),
            ("TB.",),
        ),
        "seq2seq": (  # the source length and batch dynamic; the decoder loop unrolls 4 steps
            lambda: Seq2Seq(Seq2SeqConfig(cell="lstm", **small), V, V),
            lambda T, B, g: (ids(B, T, g=g, low=1), lengths(T, B, g), ids(B, 4, g=g, low=1)),
            ("BT", "B", "B."),
        ),
    }


@pytest.mark.parametrize("name", list(_task_cases()))
def test_exported_task_model_round_trips_and_runs_at_other_sizes(name, tmp_path):
    build, inputs, dynamic = _task_cases()[name]
    torch.manual_seed(0)
    model = build().eval()
    path = tmp_path / f"{name}.pt2"
    to_torch_export(model, inputs(5, 3, torch.Generator().manual_seed(0)), path, dynamic=dynamic)
    program = load_torch_export(path)
    for seed, (T, B) in enumerate(SIZES, start=1):
        args = inputs(T, B, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = model(*args)
        _assert_close(program.module()(*args), expected, f"{name} T={T} B={B}")


# ---- the helper's boundary -----------------------------------------------------------


def test_to_torch_export_refuses_to_overwrite_and_names_bad_axes(tmp_path):
    layer, x = rnnkit.GRU(D, H), torch.randn(5, 3, D)
    path = tmp_path / "gru.pt2"
    to_torch_export(layer, (x,), path)
    with pytest.raises(FileExistsError, match="exists; pass --force"):
        to_torch_export(layer, (x,), path)
    to_torch_export(layer, (x,), path, force=True)
    with pytest.raises(ValueError, match=r"dynamic axes 'TB' for input must have one character"):
        to_torch_export(layer, (x,), dynamic=("TB",))
    with pytest.raises(ValueError, match="size 1 on its dynamic axis B"):
        to_torch_export(layer, (torch.randn(5, 1, D),))
    with pytest.raises(ValueError, match=r"dynamic names \['length'\]"):
        to_torch_export(layer, (x,), dynamic={"length": "B"})


def _rewrite(path: Path, out: Path, member_suffix: str, change) -> None:
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, change(data) if item.filename.endswith(member_suffix) else data)


class _Payload:  # what a hostile archive could unpickle
    pass


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_load_refuses_an_archive_that_would_unpickle(tmp_path):
    path = tmp_path / "gru.pt2"
    to_torch_export(rnnkit.GRU(D, H), (torch.randn(5, 3, D),), path)
    load_torch_export(path)  # the plain one loads

    def mark_pickled(data: bytes) -> bytes:
        config = json.loads(data)
        next(iter(config["config"].values()))["use_pickle"] = True
        return json.dumps(config).encode()

    pickled = tmp_path / "pickled.pt2"
    _rewrite(path, pickled, "_weights_config.json", mark_pickled)
    with pytest.raises(ValueError, match="is stored as a pickle, and rnnkit never unpickles"):
        load_torch_export(pickled)
    objects = tmp_path / "objects.pt2"
    _rewrite(path, objects, "sample_inputs/model.pt", lambda _: _saved(_Payload()))
    with pytest.raises(ValueError, match=r"sample inputs .* need more than plain tensors"):
        load_torch_export(objects)
    (tmp_path / "not.pt2").write_text("not a zip")
    with pytest.raises(ValueError, match=r"is not a torch\.export archive"):
        load_torch_export(tmp_path / "not.pt2")


@pytest.mark.slow  # a fresh interpreter loads torch and the extension: ~10 s
def test_a_saved_program_needs_rnnkit_to_load(tmp_path):
    """As docs/export.md says: plain torch.export.load does not know rnnkit's operators;
    after ``load_torch_export`` (or any import of rnnkit.nn) it does."""
    path = tmp_path / "gru.pt2"
    to_torch_export(rnnkit.GRU(D, H), (torch.randn(5, 3, D),), path)
    code = (
        "import sys, torch\n"
        "try:\n    torch.export.load(sys.argv[1])\nexcept Exception as e:\n"
        "    print('without:', type(e).__name__)\n"
        "from rnnkit.export import load_torch_export\n"
        "out, h = load_torch_export(sys.argv[1]).module()(torch.randn(4, 2, 4))\n"
        "print('with:', tuple(out.shape))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "without:" in result.stdout and "with: (4, 2, 6)" in result.stdout
