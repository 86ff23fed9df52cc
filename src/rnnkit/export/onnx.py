"""ONNX graphs of rnnkit layers and models, built node by node, with ONNX's own recurrent
operators (``RNN``, ``GRU``, ``LSTM``) so that a runtime runs its fused kernels.

    to_onnx(layer, example, "layer.onnx")          # rnnkit.RNN / GRU / LSTM
    to_onnx(model, None, "model.onnx")             # a task model, through its adapter

A layer stack becomes one ONNX recurrent node per layer (both directions of a layer in
one node, ``direction="bidirectional"``), its weights converted to ONNX's layout:

    W [dirs, G, D] = weight_ih rows in ONNX's gate order, R [dirs, G, H] = weight_hh,
    B [dirs, 2G] = [bias_ih; bias_hh] (same order)
    RNN:  one gate, activations Tanh or Relu
    GRU:  torch (r, z, n) -> ONNX (z, r, h); linear_before_reset = 1 for the reset-after
          form (torch.nn, cuDNN), 0 for the reset-before form (Cho et al. 2014)
    LSTM: torch (i, f, g, o) -> ONNX (i, o, f, c); no peepholes

The node's output Y [T, dirs, B, H] is transposed and reshaped to torch's [T, B, dirs*H]
(batch-first layers transpose in and out), an initial state [layers*dirs, B, H] is split
per layer and the final states are concatenated back. Dropout between layers is the
identity: an export is the inference computation (``module.eval()``).

An LSTM with ``proj_size`` P has no ONNX operator (ONNX's LSTM has no projection); it is
composed per layer-direction: gx = x W_ih^T + b_ih + b_hh as one MatMul, then a ``Scan``
over T whose body is one step in torch's gate order (``_projected_step``), the reverse
direction scanning from the end; h0/h_n are [layers*dirs, B, P], the output dirs*P wide.

Variable lengths: ``lengths`` becomes ONNX's ``sequence_lens`` (int32 [B]). Outputs past
a sequence's length are zero in rnnkit and in ONNX Runtime. A zero length is left
undefined by the ONNX specification; ONNX Runtime accepts it and returns a zero final
state, where rnnkit returns the initial state, so the graph puts the initial state back
for those rows (other runtimes may refuse a zero length). The projected LSTM's Scan masks
steps past a row's length itself (state kept, output 0), zero lengths included.

Names in a layer's graph: inputs ``input`` ([T, B, D], or [B, T, D] batch-first),
``h0`` and ``c0`` ([layers*dirs, B, H]; when the example has a state), ``lengths`` (int32
[B]; when the example has lengths); outputs ``output``, ``h_n`` and ``c_n``. T and B are
symbolic: one file serves any sequence length and batch size.

Task models are exported by their task folder's adapter (``rnnkit.tasks.<t>.export``):
a ``torch.nn.Module`` whose ``forward`` is the exported computation in torch and whose
``onnx_graph(example)`` builds it on a ``Graph`` with the emitters here (``embedding``,
``linear``, ``recurrent``, ``cell_step``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

import rnnkit
from rnnkit.common.checks import MissingExtra
from rnnkit.common.io import atomic_path, check_new_file
from rnnkit.nn.cell_modules import CellBase
from rnnkit.nn.layers import RNNBase

OPSET = 17
"""The ONNX operator set written: every operator used here has had its current form
since opset 14 (``Reshape``, the recurrent operators) or earlier."""
IR_VERSION = 8
"""The IR version that goes with opset 17; runtimes from 2022 on read it."""

Shape = Sequence[int | str]  # a graph value's dimensions, symbolic ones by name


class ExportError(ValueError):
    """A module, configuration or example this exporter cannot write as ONNX exactly."""


@runtime_checkable
class OnnxExportable(Protocol):
    """A module that builds its own ONNX graph (the task adapters)."""

    def onnx_graph(self, example: Any = None) -> Graph: ...


def require_onnx() -> Any:
    """The ``onnx`` package, or a one-line error naming the install command."""
    try:
        import onnx
    except ImportError as error:
        raise MissingExtra("onnx", "export", "ONNX export") from error
    return onnx


# (ONNX operator, torch gate blocks in ONNX's order, attributes) per rnnkit cell.
_CELLS: dict[str, tuple[str, tuple[int, ...], dict[str, Any]]] = {
    "rnn_tanh": ("RNN", (0,), {"activations": ["Tanh"]}),
    "rnn_relu": ("RNN", (0,), {"activations": ["Relu"]}),
    "gru": ("GRU", (1, 0, 2), {"linear_before_reset": 1}),  # (r, z, n) -> (z, r, h)
    "gru_reset_before": ("GRU", (1, 0, 2), {"linear_before_reset": 0}),
    "lstm": ("LSTM", (0, 3, 1, 2), {}),  # (i, f, g, o) -> (i, o, f, c)
}


class Graph:
    """A small ONNX graph builder: inputs, initializers (deduplicated, so tied weights are
    stored once), nodes with fresh output names, outputs, and metadata."""

    def __init__(self, name: str) -> None:
        self.onnx = require_onnx()
        self.name = name
        self.nodes: list[Any] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self.initializers: list[Any] = []
        self.metadata: dict[str, str] = {}
        self._taken: set[str] = set()
        self._count: dict[str, int] = {}
        self._stored: dict[tuple[int, str], str] = {}  # (id of a tensor, transform) -> name
        self._keep: list[Tensor] = []  # the tensors behind _stored's ids, kept alive

    def fresh(self, hint: str) -> str:
        """A name for an inner value, ``hint.1``, ``hint.2``, ...: the dot keeps it apart
        from the inputs' and outputs' names, which have none."""
        self._count[hint] = k = self._count.get(hint, 0) + 1
        self._taken.add(f"{hint}.{k}")
        return f"{hint}.{k}"

    def _elem(self, dtype: str) -> int:
        types = self.onnx.TensorProto
        elems = {"float": types.FLOAT, "int64": types.INT64, "int32": types.INT32}
        return elems[dtype]

    def input(self, name: str, dtype: str, shape: Shape) -> str:
        if name in self._taken or "." in name:
            raise ValueError(f"{name!r} is taken or has a dot (kept for inner values)")
        self._taken.add(name)
        self.inputs.append(self.onnx.helper.make_tensor_value_info(name, self._elem(dtype), shape))
        return name

    def output(self, value: str, name: str, dtype: str, shape: Shape) -> None:
        """Make ``value`` a graph output called ``name``."""
        if value != name:
            if name in self._taken or "." in name:
                raise ValueError(f"{name!r} is taken or has a dot (kept for inner values)")
            self._taken.add(name)
            self.nodes.append(self.onnx.helper.make_node("Identity", [value], [name]))
        self.outputs.append(self.onnx.helper.make_tensor_value_info(name, self._elem(dtype), shape))

    def array(self, values: np.ndarray, hint: str) -> str:
        """An initializer holding ``values`` (stored as given)."""
        name = self.fresh(hint)
        self.initializers.append(
            self.onnx.numpy_helper.from_array(np.asarray(values, order="C"), name)
        )
        return name

    def weight(
        self,
        tensor: Tensor,
        hint: str,
        how: str = "",
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> str:
        """An initializer of a parameter (float32), ``transform``-ed; the same tensor with
        the same ``how`` gives the same initializer (a tied weight is stored once)."""
        key = (id(tensor), how)
        if key not in self._stored:
            values = tensor.detach().to("cpu", torch.float32).numpy()
            self._stored[key] = self.array(values if transform is None else transform(values), hint)
            self._keep.append(tensor)
        return self._stored[key]

    def ints(self, values: Sequence[int] | int, hint: str = "const") -> str:
        """An int64 constant (axes, shapes, slice bounds; a scalar for an int)."""
        return self.array(np.asarray(values, dtype=np.int64), hint)

    def scalar(self, value: float, hint: str = "const") -> str:
        """A float32 scalar constant."""
        return self.array(np.asarray(value, dtype=np.float32), hint)

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attrs: Any) -> str:
        """One node with one output; returns the output's name."""
        return self.ops(op_type, *inputs, outputs=1, hint=hint, **attrs)[0]

    def ops(
        self, op_type: str, *inputs: str, outputs: int, hint: str | None = None, **attrs: Any
    ) -> list[str]:
        """One node with ``outputs`` outputs; an input "" is an omitted optional one."""
        names = [
            self.fresh(f"{hint or op_type.lower()}{'' if k == 0 else k}") for k in range(outputs)
        ]
        args = list(inputs)
        while args and args[-1] == "":
            args.pop()
        node = self.onnx.helper.make_node(
            op_type, args, names, name=self.fresh(f"n_{names[0]}"), **attrs
        )
        self.nodes.append(node)
        return names

    def model(self) -> Any:
        """The ``onnx.ModelProto``, checked by ``onnx.checker`` (shape inference included)."""
        helper = self.onnx.helper
        graph = helper.make_graph(
            self.nodes, self.name, self.inputs, self.outputs, self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="rnnkit",
            producer_version=rnnkit.__version__,
        )
        if self.metadata:
            helper.set_model_props(model, self.metadata)
        self.onnx.checker.check_model(model, full_check=True)
        return model


# --- emitters: one function per kind of module the task models use ------------------


def embedding(g: Graph, ids: str, module: nn.Embedding) -> str:
    """ids (int64, any shape) -> the rows of the table [..., D] (``Gather``)."""
    if module.max_norm is not None:
        raise ExportError("an nn.Embedding with max_norm renormalises its table when called")
    return g.op("Gather", g.weight(module.weight, "embedding"), ids, hint="embedded")


def one_hot(g: Graph, ids: str, depth: int) -> str:
    """ids (int64) -> float32 one-hot vectors [..., depth] (``OneHot``)."""
    values = g.array(np.asarray([0.0, 1.0], dtype=np.float32), "one_hot_values")
    return g.op("OneHot", ids, g.ints([depth], "depth"), values, axis=-1, hint="one_hot")


def linear(g: Graph, x: str, module: nn.Linear, rank: int) -> str:
    """x [..., in] of ``rank`` dimensions -> x W^T + b [..., out]: ``Gemm`` for a matrix
    (the weight stored as torch has it, so a tied embedding shares it), else ``MatMul``
    by W^T and ``Add``."""
    bias = "" if module.bias is None else g.weight(module.bias, "bias")
    if rank == 2:
        weight = g.weight(module.weight, "weight")
        return g.op("Gemm", x, weight, bias, transB=1, hint="linear")
    weight_t = g.weight(module.weight, "weight_t", "T", lambda w: w.T)
    out = g.op("MatMul", x, weight_t, hint="linear")
    return out if not bias else g.op("Add", out, bias, hint="linear")


def _cell_record(cell_name: str) -> tuple[str, tuple[int, ...], dict[str, Any]]:
    if cell_name not in _CELLS:
        raise ExportError(
            f"no ONNX operator for the cell {cell_name!r}; known: {', '.join(_CELLS)}"
        )
    return _CELLS[cell_name]


def _onnx_weights(
    g: Graph, cell_name: str, hidden: int, directions: Sequence[Sequence[Tensor | None]], hint: str
) -> tuple[str, str, str]:
    """W, R and B initializers (B "" without biases) of one ONNX recurrent node from each
    direction's (weight_ih, weight_hh, bias_ih, bias_hh) in torch's layout."""
    _, order, _ = _cell_record(cell_name)

    def rows(t: Tensor | None) -> np.ndarray:  # torch's gate blocks [G, ...] in ONNX's order
        assert t is not None
        blocks = t.detach().to("cpu", torch.float32).numpy().reshape(len(order), hidden, -1)
        return blocks[list(order)].reshape(len(order) * hidden, -1)

    w = np.stack([rows(d[0]) for d in directions])  # [dirs, G, D]
    r = np.stack([rows(d[1]) for d in directions])  # [dirs, G, H]
    names = [g.array(w, f"{hint}_W"), g.array(r, f"{hint}_R")]
    if directions[0][2] is None:
        return names[0], names[1], ""
    b = np.stack([np.concatenate([rows(d[2])[:, 0], rows(d[3])[:, 0]]) for d in directions])
    return names[0], names[1], g.array(b, f"{hint}_B")  # [dirs, 2G]


def _check_float32(module: nn.Module) -> None:
    for name, p in module.named_parameters():
        if p.dtype != torch.float32:
            raise ExportError(
                f"ONNX export writes float32 models; the parameter {name} is {p.dtype} "
                "(convert the module with .float() first)"
            )


def _check_exportable(layer: RNNBase) -> None:
    if not (layer.cell.standard or (layer.cell.name == "lstm" and layer.cell.proj_size)):
        raise ExportError(
            f"ONNX export has no form of the cell {layer.cell.label!r}; export it with torch.export"
        )
    if any(layer.zoneout):  # the other regularisers are the identity in evaluation
        raise ExportError(
            f"ONNX export has no zoneout (the layer has zoneout={layer.zoneout}, which in "
            "evaluation mixes each state with the previous one); export it with torch.export"
        )


def recurrent(
    g: Graph,
    x: str,
    layer: RNNBase,
    *,
    lengths: str | None = None,
    state: Sequence[str] | None = None,
    hint: str = "rnn",
) -> tuple[str, tuple[str, ...]]:
    """An rnnkit layer stack: x in the layer's layout ([T, B, D], or [B, T, D] with
    batch_first), ``lengths`` int32 [B] (ONNX's sequence_lens), ``state`` (h0,) or
    (h0, c0), each [layers*dirs, B, size] (``layer.state_sizes``) -> (output in the
    layer's layout, [..., dirs*R] with R = ``layer.output_size``; final states, each
    [layers*dirs, B, size]). A projected LSTM is composed with ``Scan``
    (``_projected_stack``), every other layer uses ONNX's recurrent operators."""
    _check_exportable(layer)
    _check_float32(layer)
    if layer.batch_first:
        x = g.op("Transpose", x, perm=[1, 0, 2], hint="time_major")  # [T, B, D]
    if layer.cell.proj_size:
        x, finals = _projected_stack(g, x, layer, lengths, state, hint)
    else:
        x, finals = _operator_stack(g, x, layer, lengths, state, hint)
    if layer.batch_first:
        x = g.op("Transpose", x, perm=[1, 0, 2], hint="batch_major")
    stacked = tuple(
        f[0] if len(f) == 1 else g.op("Concat", *f, axis=0, hint=f"{hint}_final") for f in finals
    )
    return x, stacked


def _operator_stack(
    g: Graph,
    x: str,
    layer: RNNBase,
    lengths: str | None,
    state: Sequence[str] | None,
    hint: str,
) -> tuple[str, list[list[str]]]:
    """x [T, B, D] -> (output [T, B, dirs*H], per state kind one final [dirs, B, H] per
    layer): one ONNX recurrent node per layer."""
    op, _, attrs = _cell_record(layer.cell.name)
    dirs, L, H = layer.num_directions, layer.num_layers, layer.hidden_size
    per_layer: list[list[str]] = []  # per state kind, one [dirs, B, H] name per layer
    for s in state or ():
        if L == 1:
            per_layer.append([s])
        else:  # [L*dirs, B, H] -> L x [dirs, B, H]
            per_layer.append(
                g.ops(
                    "Split", s, g.ints([dirs] * L, "split"), axis=0, outputs=L, hint=f"{hint}_state"
                )
            )
    zero_length = ""
    if lengths is not None and state:  # rows of length 0 keep their initial state (module doc)
        none = g.op("Equal", lengths, g.array(np.asarray(0, dtype=np.int32), "zero"))
        zero_length = g.op(
            "Unsqueeze", none, g.ints([0, 2], "axes"), hint="zero_length"
        )  # [1, B, 1]
    finals: list[list[str]] = [[] for _ in range(layer.cell.num_states)]
    for k in range(L):
        w, r, b = _onnx_weights(
            g,
            layer.cell.name,
            H,
            [layer._direction_weights(k, d) for d in range(dirs)],
            f"{hint}_l{k}",
        )
        initial = [p[k] for p in per_layer] if per_layer else [""] * layer.cell.num_states
        outs = g.ops(
            op,
            x,
            w,
            r,
            b,
            lengths or "",
            *(initial if op == "LSTM" else initial[:1]),
            outputs=1 + layer.cell.num_states,
            hint=f"{hint}_l{k}_",
            hidden_size=H,
            direction="bidirectional" if dirs == 2 else "forward",
            **({"activations": attrs["activations"] * dirs} if "activations" in attrs else {}),
            **{key: v for key, v in attrs.items() if key != "activations"},
        )
        y, layer_finals = outs[0], outs[1:]  # y [T, dirs, B, H]
        for j, f in enumerate(layer_finals):
            if zero_length:
                f = g.op("Where", zero_length, initial[j], f, hint=f"{hint}_l{k}_final")
            finals[j].append(f)
        if dirs == 1:
            x = g.op("Squeeze", y, g.ints([1], "axes"), hint=f"{hint}_l{k}_out")  # [T, B, H]
        else:  # [T, 2, B, H] -> [T, B, 2, H] -> [T, B, 2H]
            y = g.op("Transpose", y, perm=[0, 2, 1, 3])
            x = g.op("Reshape", y, g.ints([0, 0, -1], "shape"), hint=f"{hint}_l{k}_out")
    return x, finals


def _projected_stack(
    g: Graph,
    x: str,
    layer: RNNBase,
    lengths: str | None,
    state: Sequence[str] | None,
    hint: str,
) -> tuple[str, list[list[str]]]:
    """x [T, B, D] -> (output [T, B, dirs*P], final h and c, one [1, B, P] / [1, B, H] per
    layer-direction) for an LSTM with ``proj_size`` P, which ONNX's LSTM operator cannot
    express: per layer-direction, the input projection as one MatMul over all steps
    (gx [T, B, 4H], both biases added) and the recurrence as a ``Scan`` over T whose
    body is one projected step in torch's gate order (``_projected_step``); the reverse
    direction scans its input and writes its output from the end
    (``scan_input_directions`` / ``scan_output_directions`` = 1).

    With lengths, the step at t of row b counts only where t < lengths[b]: elsewhere the
    state is kept and the output is 0. The forward direction's final state is then the
    one at the row's last real step; the reverse direction starts at T-1 and keeps its
    initial state until t = lengths[b]-1, which is where the rnnkit layer starts it; a
    zero length keeps the initial state throughout, as the layer returns."""
    dirs, L, H, P = layer.num_directions, layer.num_layers, layer.hidden_size, layer.proj_size
    shape = g.op("Shape", x, hint="shape")  # [3]: T, B, D
    batch = g.op("Slice", shape, g.ints([1], "start"), g.ints([2], "end"), hint="batch")  # [1]
    mask = ""
    if lengths is not None:  # mask [T, B, 1]: t < lengths[b]
        steps = g.op("Slice", shape, g.ints([0], "start"), g.ints([1], "end"))  # [1]
        steps = g.op("Cast", g.op("Squeeze", steps), to=g._elem("int32"), hint="steps")
        one, zero = (g.array(np.asarray(v, dtype=np.int32), "const") for v in (1, 0))
        t = g.op("Range", zero, steps, one, hint="t")  # [T]
        t = g.op("Unsqueeze", t, g.ints([1], "axes"))  # [T, 1]
        mask = g.op("Less", t, g.op("Unsqueeze", lengths, g.ints([0], "axes")))  # [T, B]
        mask = g.op("Unsqueeze", mask, g.ints([2], "axes"), hint="mask")  # [T, B, 1]

    def initial(kind: int, index: int, size: int) -> str:  # [B, size]
        if state:
            return g.op("Gather", state[kind], g.ints(index, "index"), axis=0, hint="initial")
        fill = g.onnx.numpy_helper.from_array(np.zeros(1, np.float32))
        dims = g.op("Concat", batch, g.ints([size], "size"), axis=0)
        return g.op("ConstantOfShape", dims, value=fill, hint="initial")

    zero = g.scalar(0.0, "zero") if mask else ""
    finals: list[list[str]] = [[], []]
    for k in range(L):
        ys = []
        for d in range(dirs):
            w_ih, w_hh, b_ih, b_hh, w_hr = layer._direction_weights(k, d)
            assert w_ih is not None and w_hh is not None and w_hr is not None
            name = f"{hint}_l{k}{'_reverse' if d else ''}"
            w_ih_t = g.weight(w_ih, f"{name}_w_ih_t", "T", lambda w: w.T)  # [D, 4H]
            gx = g.op("MatMul", x, w_ih_t, hint=f"{name}_gx")  # [T, B, 4H]
            if b_ih is not None and b_hh is not None:
                both = (b_ih + b_hh).detach().to("cpu", torch.float32).numpy()
                gx = g.op("Add", gx, g.array(both, f"{name}_b"), hint=f"{name}_gx")
            w_hh_t = g.weight(w_hh, f"{name}_w_hh_t", "T", lambda w: w.T)  # [P, 4H]
            w_hr_t = g.weight(w_hr, f"{name}_w_hr_t", "T", lambda w: w.T)  # [H, P]
            body = _projected_step(g, w_hh_t, w_hr_t, zero, H, P, masked=bool(mask), hint=name)
            h, c, y = g.ops(
                "Scan",
                initial(0, k * dirs + d, P),
                initial(1, k * dirs + d, H),
                gx,
                *([mask] if mask else []),
                outputs=3,
                hint=f"{name}_",
                body=body,
                num_scan_inputs=2 if mask else 1,
                scan_input_directions=[d] * (2 if mask else 1),
                scan_output_directions=[d],
            )  # h [B, P], c [B, H], y [T, B, P]
            axes = g.ints([0], "axes")
            finals[0].append(g.op("Unsqueeze", h, axes, hint=f"{name}_h"))  # [1, B, P]
            finals[1].append(g.op("Unsqueeze", c, axes, hint=f"{name}_c"))  # [1, B, H]
            ys.append(y)
        x = ys[0] if dirs == 1 else g.op("Concat", *ys, axis=2, hint=f"{hint}_l{k}_out")
    return x, finals  # x [T, B, dirs*P]


def _projected_step(
    g: Graph, w_hh_t: str, w_hr_t: str, zero: str, H: int, P: int, *, masked: bool, hint: str
) -> Any:
    """The Scan body of one projected LSTM step (``rnnkit.nn.cells.lstm``), torch's gate
    order (i, f, g, o); the weights and the zero are the outer graph's values:

        (h [B, P], c [B, H]; gx_t [B, 4H], m_t [B, 1] when masked) -> (h', c'; y_t [B, P])
        gates = gx_t + h W_hh^T,  c' = f c + i g,  h' = W_hr (o tanh(c'))
        masked: h', c' = where(m_t, h', h), where(m_t, c', c); y_t = where(m_t, h', 0)
    """
    helper, types = g.onnx.helper, g.onnx.TensorProto
    body = Graph(f"{hint}_step")
    body._taken, body._count = g._taken, g._count  # names stay unique across both scopes

    def value(hint: str, elem: int, shape: Shape) -> tuple[str, Any]:
        name = g.fresh(hint)
        return name, helper.make_tensor_value_info(name, elem, shape)

    (h, h_info), (c, c_info) = value("h", types.FLOAT, ["B", P]), value("c", types.FLOAT, ["B", H])
    gx, gx_info = value("gx_t", types.FLOAT, ["B", 4 * H])
    inputs = [h_info, c_info, gx_info]
    if masked:
        m, m_info = value("m_t", types.BOOL, ["B", 1])
        inputs.append(m_info)
    gates = body.op("Add", gx, body.op("MatMul", h, w_hh_t), hint="gates")  # [B, 4H]
    i, f, cand, o = body.ops("Split", gates, axis=1, outputs=4, hint="gate")  # each [B, H]
    i, f, o = (body.op("Sigmoid", a, hint=n) for a, n in ((i, "i"), (f, "f"), (o, "o")))
    cand = body.op("Tanh", cand, hint="g")
    c_new = body.op("Add", body.op("Mul", f, c), body.op("Mul", i, cand), hint="c_new")  # [B, H]
    h_full = body.op("Mul", o, body.op("Tanh", c_new), hint="h_full")  # [B, H]
    h_new = body.op("MatMul", h_full, w_hr_t, hint="h_new")  # [B, H] @ [H, P] -> [B, P]
    if masked:
        y = body.op("Where", m, h_new, zero, hint="y_t")
        h_new = body.op("Where", m, h_new, h, hint="h_kept")
        c_new = body.op("Where", m, c_new, c, hint="c_kept")
    else:
        y = body.op("Identity", h_new, hint="y_t")  # a value is one output of a graph
    outputs = [
        helper.make_tensor_value_info(h_new, types.FLOAT, ["B", P]),
        helper.make_tensor_value_info(c_new, types.FLOAT, ["B", H]),
        helper.make_tensor_value_info(y, types.FLOAT, ["B", P]),
    ]
    return helper.make_graph(body.nodes, f"{hint}_step", inputs, outputs)


def cell_step(
    g: Graph, x: str, cell: CellBase, state: Sequence[str], hint: str = "cell"
) -> tuple[str, ...]:
    """One step of an rnnkit cell module: x [B, D], state (h,) or (h, c), each [B, H] ->
    the new state, through the ONNX recurrent operator at T = 1."""
    op, _, attrs = _cell_record(cell.cell.name)
    _check_float32(cell)
    if any(cell.zoneout):  # the other regularisers are the identity in evaluation
        raise ExportError(
            f"ONNX export has no zoneout (the cell has zoneout={cell.zoneout}, which in "
            "evaluation mixes each state with the previous one); export it with torch.export"
        )
    w, r, b = _onnx_weights(
        g,
        cell.cell.name,
        cell.hidden_size,
        [(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)],
        hint,
    )
    axes = g.ints([0], "axes")
    xs = g.op("Unsqueeze", x, axes)  # [1, B, D]
    initial = [g.op("Unsqueeze", s, axes) for s in state]  # each [1, B, H]
    outs = g.ops(
        op,
        xs,
        w,
        r,
        b,
        "",
        *initial,
        outputs=1 + len(state),
        hint=f"{hint}_",
        hidden_size=cell.hidden_size,
        **attrs,
    )
    return tuple(g.op("Squeeze", s, axes, hint=f"{hint}_state") for s in outs[1:])


# --- the layers' graph and the entry points --------------------------------------------


def _layer_example(layer: RNNBase, example: Any) -> tuple[Tensor | None, Any, Any]:
    """(input, hx, lengths) from a tensor, a tuple (input[, hx]) or a mapping with keys
    input, hx, lengths."""
    if example is None or isinstance(example, Tensor):
        return example, None, None
    if isinstance(example, Mapping):
        unknown = set(example) - {"input", "hx", "lengths"}
        if unknown:
            raise ExportError(
                f"the example's keys must be input, hx, lengths; got {sorted(unknown)}"
            )
        return example.get("input"), example.get("hx"), example.get("lengths")
    if isinstance(example, tuple | list) and 1 <= len(example) <= 2:
        return example[0], (example[1] if len(example) == 2 else None), None
    raise ExportError(
        "the example must be an input tensor, a tuple (input, hx) or a mapping with keys "
        f"input, hx, lengths; got {type(example).__name__}"
    )


def layer_graph(layer: RNNBase, example: Any = None) -> Graph:
    """The graph of an rnnkit layer stack; ``example`` (see ``to_onnx``) decides whether
    it takes an initial state and lengths, and is run through the layer as a check."""
    x, hx, lengths = _layer_example(layer, example)
    _check_float32(layer)
    if x is not None:
        if not isinstance(x, Tensor) or x.dim() != 3:
            raise ExportError(
                "export a layer with a batched example input, 3-D "
                f"({'[B, T, D]' if layer.batch_first else '[T, B, D]'}); got "
                + (f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__)
            )
        with torch.no_grad():
            layer(x, hx, lengths=lengths)  # the layer's own checks speak first
    g = Graph(f"rnnkit_{layer.cell.name}")
    dirs, L, D = layer.num_directions, layer.num_layers, layer.input_size
    sizes = layer.state_sizes  # (H,), (H, H), or (P, H) with a projection
    seq: list[int | str] = ["B", "T"] if layer.batch_first else ["T", "B"]
    x_name = g.input("input", "float", [*seq, D])
    state = None
    if hx is not None:
        names = ("h0", "c0")[: len(sizes)]
        state = [g.input(n, "float", [L * dirs, "B", s]) for n, s in zip(names, sizes, strict=True)]
    lens = None if lengths is None else g.input("lengths", "int32", ["B"])
    out, finals = recurrent(g, x_name, layer, lengths=lens, state=state)
    g.output(out, "output", "float", [*seq, dirs * layer.output_size])
    for value, name, size in zip(finals, ("h_n", "c_n"), sizes, strict=False):
        g.output(value, name, "float", [L * dirs, "B", size])
    return g


def _adapter(module: nn.Module) -> OnnxExportable:
    """The task adapter of a task model: ``rnnkit.tasks.<t>.export.adapter(model)``,
    found from the model's module (``rnnkit.tasks.<t>.model``)."""
    parts = type(module).__module__.split(".")
    if len(parts) >= 3 and parts[:2] == ["rnnkit", "tasks"]:
        try:
            task = importlib.import_module(f"rnnkit.tasks.{parts[2]}.export")
        except ModuleNotFoundError:
            task = None
        if task is not None:
            return task.adapter(module)
    raise ExportError(
        f"cannot export a {type(module).__name__} to ONNX: rnnkit exports its layers "
        "(rnnkit.RNN, GRU, LSTM), the task models, and modules with an onnx_graph method"
    )


def onnx_model(module: nn.Module, example: Any = None) -> Any:
    """The checked ``onnx.ModelProto`` of ``module`` (see ``to_onnx``), in memory."""
    if isinstance(module, RNNBase):
        graph = layer_graph(module, example)
    elif isinstance(module, OnnxExportable):
        graph = module.onnx_graph(example)
    else:
        graph = _adapter(module).onnx_graph(example)
    graph.metadata.setdefault("rnnkit.version", rnnkit.__version__)
    return graph.model()


def to_onnx(module: nn.Module, example: Any, path: str | Path, *, force: bool = False) -> Path:
    """Write ``module`` as an ONNX model (opset 17) to ``path`` (a new file; an existing
    one only with ``force``; never a folder or a link), checked by ``onnx.checker``.

    module: an rnnkit layer stack (``rnnkit.RNN``, ``GRU``, ``LSTM``), a task model (its
    task folder's adapter exports it: the language model and the music model as step
    models, the classifier, the tagger's emissions, the forecaster, seq2seq's encoder
    and decoder step), or a module with ``onnx_graph(example)``.
    example: for a layer, None (input only), an input tensor, a tuple (input, hx) or a
    mapping {"input", "hx", "lengths"}: the graph takes an initial state and lengths
    when the example has them, and the example is run through the layer as a check; the
    sizes in it do not matter (T and B are symbolic). Task models take None.
    """
    try:
        target = check_new_file(path, "path", force)
    except FileExistsError:
        raise FileExistsError(f"{str(path)!r} exists; pass force=True to replace it") from None
    model = onnx_model(module, example)
    with atomic_path(target) as tmp:
        tmp.write_bytes(model.SerializeToString())
    return target


def signature(model: Any) -> str:
    """An ONNX model's inputs and outputs, one per line: ``name dtype [dims]``."""
    onnx = require_onnx()

    def line(kind: str, value: Any) -> str:
        t = value.type.tensor_type
        dims = [d.dim_param or str(d.dim_value) for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        return f"  {kind} {value.name}: {dtype} [{', '.join(dims)}]"

    graph = model.graph
    return "\n".join(
        [line("input ", v) for v in graph.input] + [line("output", v) for v in graph.output]
    )
