"""``torch.compile(fullgraph=True)`` over training steps: the forward, the loss and the
backward (which AOTAutograd compiles from the same single graph) give eager's loss and
gradients, and dynamo finds no graph break.

The default run compiles with the ``aot_eager`` backend (dynamo and AOTAutograd trace
everything through the rnnkit operators' fake implementations and registered autograd,
without inductor's minutes of code generation); the slow tests run inductor."""

from __future__ import annotations

import pytest
import torch

from helpers import rnnkit_class
from registry import ALL_CELLS, D, H
from rnnkit.nn.cells import CELLS
from rnnkit.nn.kernels import fused

pytestmark = pytest.mark.skipif(fused.load() is None, reason="the fused extension did not build")

RTOL, ATOL = 1e-5, 1e-6  # compiled against eager, fp32


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test traces from scratch (and never meets dynamo's limit on recompilations)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _grads(loss: torch.Tensor, leaves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))


def _assert_step_equal(step, make_inputs, leaves_of, backend: str, sizes) -> None:
    """``step(*inputs) -> loss`` compiled (fullgraph) against eager: the loss and the
    gradient of every leaf, at each (T, B) of ``sizes`` (the second traces dynamic sizes);
    the loss's backward is the compiled one."""
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    for T, B in sizes:
        inputs = make_inputs(T, B)
        loss = compiled(*inputs)
        assert type(loss.grad_fn).__name__ == "CompiledFunctionBackward"
        got = _grads(loss, leaves_of(inputs))
        expected_loss = step(*inputs)
        want = _grads(expected_loss, leaves_of(inputs))
        torch.testing.assert_close(loss, expected_loss, rtol=RTOL, atol=ATOL)
        for name in want:
            torch.testing.assert_close(
                got[name], want[name], rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}"
            )


def _layer_step(cell: str, bidirectional: bool, lengths: bool, num_layers: int = 2):
    """("lstm_proj": the LSTM with proj_size 3.)"""
    torch.manual_seed(0)
    kwargs = {"num_layers": num_layers, "bidirectional": bidirectional, "batch_first": True}
    if cell == "lstm_proj":
        cell, kwargs["proj_size"] = "lstm", 3
    layer = rnnkit_class(cell)(D, H, **kwargs)
    sizes = layer.state_sizes  # h's (P with a projection), c's
    n = num_layers * (2 if bidirectional else 1)

    def make_inputs(T, B):
        g = torch.Generator().manual_seed(T * 100 + B)
        x = torch.randn(B, T, D, generator=g, requires_grad=True)
        hx = tuple(torch.randn(n, B, size, generator=g, requires_grad=True) for size in sizes)
        length = torch.randint(1, T + 1, (B,), generator=g) if lengths else None
        return x, hx if len(hx) == 2 else hx[0], length

    def step(x, hx, length):
        out, final = layer(x, hx, lengths=length)
        finals = final if isinstance(final, tuple) else (final,)
        return out.square().mean() + sum(f.sin().sum() for f in finals)

    def leaves_of(inputs):
        x, hx = inputs[0], inputs[1]
        states = dict(enumerate(hx if isinstance(hx, tuple) else (hx,)))
        named = {"x": x} | {f"hx{k}": s for k, s in states.items()}
        return named | dict(layer.named_parameters())

    return step, make_inputs, leaves_of


def _lm_step(cell: str):
    from rnnkit.tasks.lm.config import LMConfig
    from rnnkit.tasks.lm.model import LanguageModel

    torch.manual_seed(0)
    V = 30
    model = LanguageModel(LMConfig(cell=cell, hidden_size=16, embedding_size=8, dropout=0.0), V)
    states = CELLS[cell].num_states

    def make_inputs(T, B):
        g = torch.Generator().manual_seed(T * 100 + B)
        ids, targets = (torch.randint(V, (T, B), generator=g) for _ in range(2))
        state = tuple(torch.randn(2, B, 16, generator=g) for _ in range(states))
        return ids, targets, state if states == 2 else state[0]

    def step(ids, targets, state):  # the trainer's LM step: a carried state, the mean loss
        loss, _ = model.loss(ids, targets, state)
        return loss

    return step, make_inputs, lambda _: dict(model.named_parameters())


@pytest.mark.parametrize(
    "cell, bidirectional, lengths",
    [
        ("gru", True, True),
        ("lstm", False, False),
        ("lstm_proj", True, True),
        ("lstm_ln", True, True),
        ("minlstm", True, True),
    ],
)
def test_a_layer_stack_training_step_compiles_to_one_graph(cell, bidirectional, lengths):
    step, make_inputs, leaves_of = _layer_step(cell, bidirectional, lengths)
    explained = torch._dynamo.explain(step)(*make_inputs(5, 3))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    _assert_step_equal(step, make_inputs, leaves_of, "aot_eager", [(5, 3), (7, 2)])


def test_the_composite_path_compiles_too():
    """The backend every device has: its time loop traced step by step, lengths masked
    (the mask kept even when every row is full: no branch on values)."""
    import rnnkit

    step, make_inputs, leaves_of = _layer_step("rnn_tanh", True, True, num_layers=1)
    with rnnkit.use_backend("composite"):
        _assert_step_equal(step, make_inputs, leaves_of, "aot_eager", [(4, 3)])


def test_a_language_model_training_step_compiles_with_no_graph_break():
    step, make_inputs, leaves_of = _lm_step("lstm")
    explained = torch._dynamo.explain(step)(*make_inputs(6, 4))
    assert explained.graph_break_count == 0, explained.break_reasons
    _assert_step_equal(step, make_inputs, leaves_of, "aot_eager", [(6, 4), (9, 3)])


def test_a_compiled_step_under_bf16_autocast_equals_eager_autocast():
    """The layers ask the fused kernel for bf16 products under autocast; traced, the
    request reaches the operator too (the same products, so the same numbers)."""
    torch.manual_seed(0)
    layer = rnnkit_class("gru")(D, H, num_layers=2)

    def step(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, h = layer(x)
        return out.float().square().sum() + h.float().sum()

    x = torch.randn(5, 3, D, requires_grad=True)
    leaves = {"x": x} | dict(layer.named_parameters())
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(x)
    got, want = _grads(loss, leaves), _grads(step(x), leaves)
    torch.testing.assert_close(loss, step(x), rtol=0, atol=0)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
    with torch.no_grad():
        out, h = layer(x)  # fp32 products: not what ran above
        assert out.square().sum() + h.sum() != loss
    assert _traced_bf16_flags(step, x) == {True}


def _traced_bf16_flags(step, *inputs) -> set[bool]:
    """The ``bf16`` argument of every ``rnnkit::fused_layer`` call a trace of step holds."""
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    torch._dynamo.reset()
    torch.compile(step, fullgraph=True, backend=backend)(*inputs)
    return {
        node.args[-1]
        for gm in graphs
        for node in gm.graph.nodes
        if node.target is torch.ops.rnnkit.fused_layer.default
    }


def test_compiled_streaming_steps_run_the_step_operator():
    """T = 1 with a given state and no grad: the layers' streaming path, traced through
    ``rnnkit::fused_step``, as eager."""
    torch.manual_seed(0)
    layer = rnnkit_class("lstm")(D, H, num_layers=2).eval()
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    x = torch.randn(1, 3, D)
    hx = (torch.randn(2, 3, H), torch.randn(2, 3, H))
    with torch.no_grad():
        got, want = compiled(x, hx), layer(x, hx)
    assert "rnnkit.fused_step" in graphs[0].code
    for a, e in zip(
        torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want), strict=True
    ):
        assert torch.equal(a, e)


# ---- inductor ------------------------------------------------------------------------


@pytest.mark.slow  # inductor generates and compiles C++: ~20 s a graph on two cores
@pytest.mark.parametrize("cell", ALL_CELLS)
def test_inductor_layer_stack_training_step_equals_eager(cell):
    step, make_inputs, leaves_of = _layer_step(cell, bidirectional=True, lengths=True)
    _assert_step_equal(step, make_inputs, leaves_of, "inductor", [(5, 3), (7, 2)])


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru_reset_before"])
def test_inductor_language_model_training_step_equals_eager(cell):
    step, make_inputs, leaves_of = _lm_step(cell)
    _assert_step_equal(step, make_inputs, leaves_of, "inductor", [(6, 4), (9, 3)])
