"""Multi-layer, bidirectional recurrent layers: drop-ins for ``torch.nn.RNN/GRU/LSTM``.

Same constructor arguments, parameter names and shapes (``weight_ih_l{k}{_reverse}``,
``weight_hh_l...``, ``bias_ih_l...``, ``bias_hh_l...``), ``forward(input, hx)`` contract
and return values; a ``torch.nn`` state_dict loads as is. Additions: the reset-before
GRU (``reset_after=False``), ``unit_forget_bias`` for the LSTM, ``lengths=`` for
padded variable-length batches, and the recurrent regularisers torch.nn lacks
(``recurrent_dropout``, ``weight_drop``, ``zoneout``, ``variational_dropout``;
``rnnkit.nn.noise``, docs/cells.md). Nothing here is specific to one cell: a layer is a
``rnnkit.nn.cells.Cell`` plus the time-loop runner picked by ``rnnkit.nn.kernels``; the
record says which parameters a layer-direction has (``Cell.parameters``) and how large
each state is (``Cell.state_sizes``; the LSTM's h is P with ``proj_size`` P).
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.common import checks as _checks
from rnnkit.nn import kernels, noise
from rnnkit.nn.cells import (
    GRU_LN,
    LSTM_LN,
    MINGRU,
    MINLSTM,
    Cell,
    State,
    gru_cell,
    lstm_cell,
    rnn_cell,
    set_forget_bias,
)
from rnnkit.nn.kernels.precision import reduced_products


class RNNBase(nn.Module):
    """A stack of ``num_layers`` recurrent layers of one ``Cell``, each 1 or 2 directions.

    The recurrent regularisers (keyword-only, each 0 = off; ``rnnkit.nn.noise`` has the
    equations and papers): ``recurrent_dropout`` (one mask per sequence on h where it
    enters W_hh h; Gal & Ghahramani 2016), ``weight_drop`` (DropConnect on weight_hh, one
    mask per call; Merity et al. 2017), ``zoneout`` (each state keeps its previous value
    with probability p per unit and step, a number or one per state, (p_h, p_c) for the
    LSTM; Krueger et al. 2016), ``variational_dropout`` (one mask per sequence on every
    layer's input and the last layer's output; Gal & Ghahramani 2016). Each direction
    and layer draws its own masks from torch's default generator, in training only; in
    evaluation all are off but zoneout, which mixes by its expectation p. ``dropout``
    keeps torch.nn's meaning (between layers, a fresh mask per element).
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float | tuple[float, ...] = 0.0,
        variational_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.input_size = _checks.positive_int("input_size", input_size)
        self.hidden_size = _checks.positive_int("hidden_size", hidden_size)
        self.num_layers = _checks.positive_int("num_layers", num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = _checks.dropout_probability(dropout)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.recurrent_dropout = _checks.probability("recurrent_dropout", recurrent_dropout)
        self.weight_drop = _checks.probability("weight_drop", weight_drop)
        self.zoneout = noise.zoneout_rates(zoneout, ("h", "c")[: cell.num_states])
        self.variational_dropout = _checks.probability("variational_dropout", variational_dropout)
        self._weight_hh_shape = dict(cell.parameters(input_size, hidden_size, True)).get(
            "weight_hh"
        )
        if self.weight_drop and self._weight_hh_shape is None:
            raise ValueError(f"weight_drop needs a weight_hh, which cell {cell.label!r} lacks")
        if self.recurrent_dropout and not cell.recurrent:
            raise ValueError(
                f"recurrent_dropout needs a recurrent product, which cell {cell.label!r} lacks "
                "(its gates read x_t only); use zoneout or variational_dropout"
            )
        self.proj_size = cell.proj_size  # as torch.nn: 0 but for a projected LSTM
        self.state_sizes = cell.state_sizes(hidden_size)  # (h,) or (h, c): H, or P for h
        self.output_size = cell.output_size(hidden_size)  # one direction's output, h's size
        # per layer, per direction: (kind, full name) of each parameter, in torch.nn's order
        self._weight_names: list[list[tuple[tuple[str, str], ...]]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else self.output_size * self.num_directions
            names_per_direction = []
            for direction in range(self.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                specs = cell.parameters(layer_input, hidden_size, self.bias)
                for kind, shape in specs:
                    self.register_parameter(
                        kind + suffix, nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
                    )
                names_per_direction.append(tuple((kind, kind + suffix) for kind, _ in specs))
            self._weight_names.append(names_per_direction)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as ``torch.nn``; a parameter
        the cell record starts at a constant starts there (``reset_constants``)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for kind, name in self._kinds_and_names():
            if self.cell.initial_value(kind) is None:
                nn.init.uniform_(getattr(self, name), -bound, bound)
        self.reset_constants()

    @torch.no_grad()
    def reset_constants(self) -> None:
        """Set each parameter the cell record starts at a constant (``Cell.initial_value``:
        a layer norm's gain 1, its bias 0) to it: for a model whose own initialisation
        redraws every parameter. The standard cells have none."""
        for kind, name in self._kinds_and_names():
            value = self.cell.initial_value(kind)
            if value is not None:
                nn.init.constant_(getattr(self, name), value)

    def _kinds_and_names(self) -> list[tuple[str, str]]:
        """(kind, full name) of every parameter, in torch.nn's order."""
        return [pair for layer in self._weight_names for names in layer for pair in names]

    def flatten_parameters(self) -> None:
        """No-op, for code written against ``torch.nn`` (no cuDNN weight buffer here)."""

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """Per layer-direction, its parameters in torch.nn's order (as ``torch.nn``)."""
        return [
            [getattr(self, n) for _, n in names] for layer in self._weight_names for names in layer
        ]

    @property
    def _flat_weights_names(self) -> list[str]:
        return [n for layer in self._weight_names for names in layer for _, n in names]

    @property
    def _flat_weights(self) -> list[Tensor]:
        """Every parameter in torch.nn's order, as ``torch.nn.RNNBase._flat_weights``."""
        return [getattr(self, n) for n in self._flat_weights_names]

    def _direction_weights(self, layer: int, direction: int) -> tuple[Tensor | None, ...]:
        """(w_ih, w_hh, b_ih, b_hh, *extra) of one layer-direction (``Cell.direction_weights``)."""
        names = self._weight_names[layer][direction]
        return self.cell.direction_weights({kind: getattr(self, n) for kind, n in names})

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}, cell={self.cell.name}"
        if self.cell.proj_size:
            text += f", proj_size={self.cell.proj_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0)):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        text += ", bidirectional=True" if self.bidirectional else ""
        for name in ("recurrent_dropout", "weight_drop", "variational_dropout"):
            if getattr(self, name):
                text += f", {name}={getattr(self, name)}"
        if any(self.zoneout):
            same = len(set(self.zoneout)) == 1
            text += f", zoneout={self.zoneout[0] if same else self.zoneout}"
        return text

    def forward(self, input, hx=None, *, lengths=None):
        """Run the stack over ``input``; see ``torch.nn.RNN`` for the contract.

        input: [T, B, D] ([B, T, D] if batch_first), [T, D] unbatched, or a
        ``PackedSequence``. lengths: per-sequence lengths of a padded input, in [0, T];
        outputs past a sequence's length are zero and its final state is taken at its
        own last step (a zero-length sequence returns its initial state).
        hx: h_0 [num_layers * num_directions, B, H] (a tuple (h_0, c_0) for the LSTM; with
        ``proj_size`` P, h_0 is [.., B, P] and c_0 [.., B, H]).
        Returns (output, h_n) or, for the LSTM, (output, (h_n, c_n)).

        Under ``torch.autocast("cpu", dtype=torch.bfloat16)``, the fused kernel computes
        its matrix products in bf16 with fp32 accumulation and its gates and states in
        fp32; the composite path computes in fp32. The layer returns what ``torch.nn``
        returns there: the autocast dtype for the RNN and the LSTM, the state's dtype for
        the GRU (the input's without a state); parameter gradients stay fp32.
        """
        if hx is not None and lengths is None and not torch.is_grad_enabled():
            stepped = self._stream_step(input, hx)
            if stepped is not None:
                return stepped
        amp = _autocast_dtype(input)
        if amp is not None:
            return self._forward_autocast(input, hx, lengths, amp)
        return self._forward(input, hx, lengths)

    def _forward_autocast(self, input, hx, lengths, amp: torch.dtype):
        """``forward`` under autocast. Autocast does not reach into a fused kernel (a
        pybind call), so the layer turns it off and casts at its boundary."""
        like = input.data if isinstance(input, PackedSequence) else input
        compute = self._parameters[self._weight_names[0][0][0][1]].dtype  # type: ignore[union-attr]
        if not like.is_floating_point() or compute not in (torch.float32, torch.float64):
            return self._forward(input, hx, lengths)  # the general path's checks speak
        returned = amp
        if self.cell.name.startswith("gru"):  # as torch.nn.GRU: the state's dtype, if given
            given = isinstance(hx, Tensor) and hx.is_floating_point()
            returned = hx.dtype if given else like.dtype

        def cast(t, dtype):
            if isinstance(t, PackedSequence):
                return t._replace(data=t.data.to(dtype))
            if isinstance(t, tuple | list):
                return tuple(cast(s, dtype) for s in t)
            return t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t

        products = amp if like.device.type == "cpu" and amp == torch.bfloat16 else None
        with torch.autocast(like.device.type, enabled=False), reduced_products(products):
            out, h = self._forward(cast(input, compute), cast(hx, compute), lengths)
        return cast(out, returned), cast(h, returned)

    def _forward(self, input, hx, lengths):
        x, lengths, batched, packed = self._time_major_input(input, lengths)
        states = self._initial_states(hx, x.shape[1], x, batched)
        drawn = self._draw_noise(x)
        run_layer = kernels.select(self.cell, x, noise=drawn is not None and drawn.per_step)
        finals: list[State] = []
        for layer in range(self.num_layers):
            dirs = range(self.num_directions)
            layer_states = [states[layer * self.num_directions + d] for d in dirs]
            weights = [self._direction_weights(layer, d) for d in dirs]
            if drawn is None:
                x, layer_finals = run_layer(self.cell, x, lengths, layer_states, weights)
            else:
                x, layer_finals = self._noisy_layer(
                    run_layer, layer, x, lengths, layer_states, weights, drawn
                )
            finals.extend(layer_finals)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        if drawn is not None and drawn.output is not None:
            x = x * drawn.output  # [T, B, dirs*R] * [B, dirs*R]: one mask per sequence
        final = tuple(torch.stack([f[k] for f in finals]) for k in range(self.cell.num_states))
        if not batched:
            x, final = x.squeeze(1), tuple(s.squeeze(1) for s in final)
        elif packed is not None:
            x = _repack(x, lengths, packed)
        elif self.batch_first:
            x = x.transpose(0, 1)
        return x, (final[0] if self.cell.num_states == 1 else final)

    def _draw_noise(self, x: Tensor) -> noise.StackNoise | None:
        """The regularisers' masks for one call on x [T, B, D] (``noise.draw``: in a fixed
        order from torch's default generator), or None when none applies."""
        dirs, R = self.num_directions, self.output_size
        return noise.draw(
            training=self.training,
            T=x.shape[0],
            B=x.shape[1],
            input_sizes=[self.input_size] + [dirs * R] * (self.num_layers - 1),
            weight_hh_shape=self._weight_hh_shape,
            state_sizes=self.state_sizes,
            directions=dirs,
            recurrent_dropout=self.recurrent_dropout,
            weight_drop=self.weight_drop,
            zoneout=self.zoneout,
            variational_dropout=self.variational_dropout,
            like=x,
        )

    def _noisy_layer(self, run_layer, layer, x, lengths, states, weights, drawn):
        """Layer ``layer`` under the masks ``drawn``: locked dropout on its input x
        [T, B, D_l], DropConnect on each direction's weight_hh (a new tensor, so the
        parameter is never written and its gradient is the mask times the dropped
        weight's), and the per-step noise handed to ``run_layer`` (only when there is
        some, so any kernel runs a layer without it)."""
        mask = drawn.inputs[layer]
        if mask is not None:
            x = x * mask  # [T, B, D_l] * [B, D_l]: the same mask at every step
        weights = [
            w if m is None else (w[0], w[1] * m, *w[2:])  # [G, R] * [G, R]
            for w, m in zip(weights, drawn.weight_hh[layer], strict=True)
        ]
        steps = drawn.steps[layer]
        if steps is None:
            return run_layer(self.cell, x, lengths, states, weights)
        return run_layer(self.cell, x, lengths, states, weights, noise=steps)

    def _stream_step(self, input, hx):
        """The streaming fast path: one time step of a batched tensor with a given state,
        no autograd, one direction, on a kernel with a single-step function (the fused
        CPU one), in the parameters' dtype or under bf16 autocast on CPU. Returns None, and
        the general path runs (and validates), whenever any of that does not hold. Same
        results as the general path (under autocast: the same bf16 products and returned
        dtypes); far less per-call work: what does not change between calls (the step
        function, the weights, bf16 copies of them) is kept in ``_stream_plan``."""
        if type(input) is not Tensor or input.dim() != 3:
            return None
        if self.training and (self.dropout or self._noisy_in_training):
            return None
        amp = torch.is_autocast_enabled("cpu")
        plan = self._stream_plan(amp)
        if plan is None:
            return None
        step, weights, allowed, device = plan
        if input.shape[1 if self.batch_first else 0] != 1 or input.shape[2] != self.input_size:
            return None
        if input.dtype not in allowed or input.device != device:
            return None
        two = len(self.state_sizes) == 2
        parts = tuple(hx) if two and isinstance(hx, tuple | list) and len(hx) == 2 else (hx,)
        if len(parts) != len(self.state_sizes):
            return None
        B, L = input.shape[0 if self.batch_first else 1], self.num_layers
        for part, size in zip(parts, self.state_sizes, strict=True):
            if type(part) is not Tensor or part.shape != (L, B, size):
                return None
            if part.dtype not in allowed or part.device != device:
                return None
        returned = allowed[0]  # the parameters' dtype
        if amp:  # as _forward_autocast: the GRU returns its state's dtype, the others bf16
            returned = parts[0].dtype if self.cell.name.startswith("gru") else torch.bfloat16
        rounded = amp and returned == torch.bfloat16
        x, finals, last = input, [], L - 1
        for layer in range(L):
            state = parts if last == 0 else tuple(p[layer] for p in parts)
            x, state = step(
                self.cell,
                x,
                state,
                weights[layer],
                y_bf16=rounded and layer == last,
                state_bf16=rounded,
            )
            finals.append(state)
        if last == 0:
            final = finals[0]
        else:
            final = tuple(torch.cat([f[k] for f in finals]) for k in range(len(parts)))
        out = x.transpose(0, 1) if self.batch_first else x  # [1, B, R] -> the input's layout
        return out, (final if two else final[0])

    @property
    def _noisy_in_training(self) -> bool:
        """Whether a training call draws regulariser masks (the step has none)."""
        return bool(self.recurrent_dropout or self.weight_drop or self.variational_dropout)

    def _stream_plan(self, amp: bool):
        """(step function, per-layer weight tuples, allowed dtypes (the parameters' first),
        device) for ``_stream_step``, or None where it cannot run: two directions, zoneout
        (its evaluation mixing changes the step), no single-step kernel, or autocast other
        than bf16 over fp32 parameters on CPU.

        Per layer the weights are (w_ih, w_hh, b_ih, b_hh, *extra): the parameters, or
        under ``amp`` bf16 copies of the two matrices (the biases stay fp32). The plan is
        kept while every parameter is the same tensor with the same storage and version
        and the backend and the kernel registry are the same; any in-place edit (an optimiser step,
        ``load_state_dict``, ``p.mul_()`` under ``no_grad``) bumps the version, so it is
        rebuilt. Edits through ``p.data`` bypass the version counter and are not seen: use
        in-place ops on ``p``."""
        if self.num_directions != 1 or any(self.zoneout):
            return None
        if amp and torch.get_autocast_dtype("cpu") != torch.bfloat16:
            return None
        params = cast(dict[str, Tensor], self._parameters)  # every name is registered
        dispatch = kernels.dispatch_state()
        cached = self.__dict__.get("_stream_cache")
        if cached is not None and cached[0] == dispatch:
            for name, p, version, ptr in cached[1]:
                if params[name] is not p or p._version != version or p.data_ptr() != ptr:
                    break
            else:
                return cached[3] if amp else cached[2]
        names = [name for (layer,) in self._weight_names for _, name in layer]
        if any(params[name] is None for name in names):
            return None
        seen = [
            (name, params[name], params[name]._version, params[name].data_ptr()) for name in names
        ]
        first = params[names[0]]
        step = kernels.select_step(self.cell, first)
        plain = bf16 = None
        if step is not None:
            weights = [self._direction_weights(layer, 0) for layer in range(self.num_layers)]
            plain = (step, weights, (first.dtype,), first.device)
            # (no bf16 plan for the projected LSTM: its products stay fp32 under autocast)
            if first.is_cpu and first.dtype == torch.float32 and not self.cell.proj_size:
                copies = [
                    (
                        cast(Tensor, w[0]).bfloat16(),
                        None if w[1] is None else w[1].bfloat16(),
                        *w[2:],
                    )
                    for w in weights
                ]
                bf16 = (step, copies, (torch.float32, torch.bfloat16), first.device)
        self.__dict__["_stream_cache"] = (dispatch, seen, plain, bf16)
        return bf16 if amp else plain

    def _time_major_input(self, input, lengths):
        """-> (x [T, B, D], lengths [B] or None, batched?, the input PackedSequence or None)."""
        packed = None
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("pass lengths= only with a padded tensor, not a PackedSequence")
            packed = input
            x, lengths = pad_packed_sequence(input)  # [T, B, D], original batch order
        else:
            x = _checks.tensor("input", input)
            if x.dim() not in (2, 3):
                raise ValueError(
                    f"input must be 3-D ({'[B, T, D]' if self.batch_first else '[T, B, D]'}) "
                    f"or 2-D unbatched [T, D], got shape {tuple(x.shape)}"
                )
            if x.dim() == 2:
                if lengths is not None:
                    raise ValueError("lengths= needs a batched (3-D) input")
                x = x.unsqueeze(1)
            elif self.batch_first:
                x = x.transpose(0, 1)
        _checks.floating("input", x)
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"input has {x.shape[2]} features but the layer expects "
                f"input_size={self.input_size}"
            )
        if x.shape[0] == 0:
            raise ValueError("input has no time steps (T = 0)")
        if lengths is not None:
            lengths = _checks.lengths_for(lengths, x.shape[0], x.shape[1], x.device)
        batched = packed is not None or input.dim() == 3
        return x, lengths, batched, packed

    def _initial_states(self, hx, B: int, x: Tensor, batched: bool) -> list[State]:
        """One state tuple per layer-direction (each [B, size], ``state_sizes``), from hx
        or zeros."""
        n = self.num_layers * self.num_directions
        if hx is None:
            zeros = {size: x.new_zeros(n, B, size) for size in self.state_sizes}
            return [tuple(zeros[size][k] for size in self.state_sizes) for k in range(n)]
        names = ("h_0", "c_0")[: self.cell.num_states]
        if self.cell.num_states == 1:
            parts = (hx,)
        elif isinstance(hx, tuple | list) and len(hx) == 2:
            parts = tuple(hx)
        else:
            raise TypeError("the LSTM's hx must be a tuple (h_0, c_0)")
        states = [
            _checks.state_like(name, s, (n, B, size) if batched else (n, size), x)
            for name, s, size in zip(names, parts, self.state_sizes, strict=True)
        ]
        if not batched:
            states = [s.unsqueeze(1) for s in states]
        return [tuple(s[k] for s in states) for k in range(n)]


def _autocast_dtype(input) -> torch.dtype | None:
    """The autocast dtype in force for ``input``'s device, or None."""
    like = input.data if isinstance(input, PackedSequence) else input
    if not isinstance(like, Tensor):
        return None
    device = like.device.type
    if device not in ("cpu", "cuda") or not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def _repack(out: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack out [T, B, F] (original batch order) with the same layout as ``like``."""
    if like.sorted_indices is not None:
        out = out.index_select(1, like.sorted_indices)  # into the packed (sorted) order
        lengths = lengths.index_select(0, like.sorted_indices.to(lengths.device))
    data = pack_padded_sequence(out, lengths.cpu(), enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


class RNN(RNNBase):
    """Elman RNN layers (``rnnkit.nn.cells.rnn``); a drop-in for ``torch.nn.RNN``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float | tuple[float, ...] = 0.0,
        variational_dropout: float = 0.0,
    ) -> None:
        self.nonlinearity = nonlinearity
        super().__init__(
            rnn_cell(nonlinearity),
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device,
            dtype,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
            variational_dropout=variational_dropout,
        )


class GRU(RNNBase):
    """GRU layers (``rnnkit.nn.cells.gru``); a drop-in for ``torch.nn.GRU``.

    ``reset_after=False`` selects the original reset-before form of Cho et al. 2014.
    ``layer_norm=True`` the layer-normalised GRU (Ba et al. 2016; haste's LayerNormGRU:
    ``rnnkit.nn.cells.layer_norm``), reset-after only.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        reset_after: bool = True,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float | tuple[float, ...] = 0.0,
        variational_dropout: float = 0.0,
        layer_norm: bool = False,
    ) -> None:
        self.reset_after = bool(reset_after)
        self.layer_norm = bool(layer_norm)
        if self.layer_norm and not self.reset_after:
            raise ValueError(
                "layer_norm=True has the reset-after form only (haste's LayerNormGRU), "
                "got reset_after=False"
            )
        super().__init__(
            GRU_LN if self.layer_norm else gru_cell(self.reset_after),
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device,
            dtype,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
            variational_dropout=variational_dropout,
        )


class LSTM(RNNBase):
    """LSTM layers (``rnnkit.nn.cells.lstm``); a drop-in for ``torch.nn.LSTM``.

    ``proj_size`` P (0 < P < hidden_size) projects h to P units, as torch.nn
    (``weight_hr_l{k}`` [P, H]; h [.., P], c [.., H]; Sak et al. 2014), on the fused CPU
    kernel too (its products in the parameters' dtype: fp32 also under bf16 autocast).
    ``unit_forget_bias=True`` initialises every forget-gate bias to 1. ``layer_norm=True``
    the layer-normalised LSTM (Ba et al. 2016; haste's LayerNormLSTM:
    ``rnnkit.nn.cells.layer_norm``), without ``proj_size``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        unit_forget_bias: bool = False,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float | tuple[float, ...] = 0.0,
        variational_dropout: float = 0.0,
        layer_norm: bool = False,
    ) -> None:
        hidden = _checks.positive_int("hidden_size", hidden_size)
        if isinstance(proj_size, bool) or not isinstance(proj_size, int):
            raise ValueError(f"proj_size must be an integer, got {proj_size!r}")
        if not 0 <= proj_size < hidden:
            raise ValueError(
                f"proj_size must be 0 (no projection) or in [1, hidden_size) = [1, {hidden}), "
                f"got {proj_size}"
            )
        self.unit_forget_bias = bool(unit_forget_bias)
        self.layer_norm = bool(layer_norm)
        if self.layer_norm and proj_size:
            raise ValueError(
                f"layer_norm=True has no proj_size form, got proj_size={proj_size} (use 0)"
            )
        super().__init__(
            LSTM_LN if self.layer_norm else lstm_cell(proj_size),
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device,
            dtype,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
            variational_dropout=variational_dropout,
        )

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.unit_forget_bias and self.bias:
            for weights in self.all_weights:
                set_forget_bias(weights[2], weights[3])


class _ScanLayers(RNNBase):
    """Layers of a parallel-scan cell (``CELL``), with torch.nn.GRU's constructor arguments
    and ``forward`` contract (h_0 [layers*dirs, B, H]). The regularisers that need no
    recurrent product: ``zoneout`` and ``variational_dropout`` (``recurrent_dropout`` and
    ``weight_drop`` are refused)."""

    CELL: Cell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        zoneout: float = 0.0,
        variational_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
    ) -> None:
        super().__init__(
            self.CELL,
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device,
            dtype,
            recurrent_dropout=recurrent_dropout,
            weight_drop=weight_drop,
            zoneout=zoneout,
            variational_dropout=variational_dropout,
        )


class MinGRU(_ScanLayers):
    """minGRU layers (Feng et al. 2024; ``rnnkit.nn.cells.minimal``): gates from x_t only,
    ``weight_ih_l{k}`` [2H, D] and ``bias_ih_l{k}`` [2H], no recurrent weights. Trained with
    a parallel scan over the sequence (``rnnkit.nn.kernels.scan``; "auto" takes it off the
    CPU), streamed step by step; the arguments of ``_ScanLayers``."""

    CELL = MINGRU


class MinLSTM(_ScanLayers):
    """minLSTM layers (Feng et al. 2024; ``rnnkit.nn.cells.minimal``): input and forget
    gates from x_t only, normalised to sum to 1, one state h (no c); ``weight_ih_l{k}``
    [3H, D] and ``bias_ih_l{k}`` [3H]. As ``MinGRU`` (hx is h_0 alone, not a tuple)."""

    CELL = MINLSTM
