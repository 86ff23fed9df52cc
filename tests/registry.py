"""The one registry of sample configurations that drives the layer test matrix.

Configurations are generated (cell x layers x directions x batch_first x bias x
lengths x initial state x dtype), never listed by hand; tests pick slices of it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from rnnkit.nn.cells import CELLS

TORCH_CELLS = ("rnn_tanh", "rnn_relu", "gru", "lstm")  # the forms torch.nn has
LAYER_NORM_CELLS = ("lstm_ln", "gru_ln")  # no torch.nn form: test_layer_norm_cells.py
ALL_CELLS = tuple(c for c in CELLS if c not in LAYER_NORM_CELLS)
FUSED_CELLS = tuple(name for name, cell in CELLS.items() if cell.standard or not cell.recurrent)
"""The cells the fused CPU kernel implements with torch.nn's parameters: the classic ones
in their standard layout and minGRU/minLSTM (the LSTM with ``proj_size``, which it also
runs, is "lstm_proj" in test_kernels.py; the layer-normalised ones are tested in
test_layer_norm_cells.py)."""
KERNEL_CELLS = (*FUSED_CELLS, "lstm_proj")
"""FUSED_CELLS and the LSTM with a projection ("lstm_proj": ``proj_size`` P < H), for the
tests that list the fused kernel's cells by name."""
RECURRENT_FUSED_CELLS = tuple(name for name in FUSED_CELLS if CELLS[name].recurrent)
"""The fused cells with a recurrent weight (what recurrent dropout and weight drop act on)."""
LENGTH_MODES = ("full", "padded", "packed")

T, B, D, H = 5, 3, 4, 6  # small enough for a matrix of a thousand cases


@dataclass(frozen=True)
class LayerConfig:
    cell: str
    num_layers: int
    bidirectional: bool
    batch_first: bool
    bias: bool
    lengths: str  # "full", "padded" (a tensor with lengths=) or "packed" (PackedSequence)
    initial_state: bool
    dtype: torch.dtype
    proj_size: int = 0  # lstm only: torch.nn.LSTM's projection of h (tests/test_proj_size.py)

    @property
    def id(self) -> str:
        return "-".join(
            [
                self.cell,
                f"L{self.num_layers}",
                "bi" if self.bidirectional else "uni",
                "bf" if self.batch_first else "tf",
                "bias" if self.bias else "nobias",
                self.lengths,
                "h0" if self.initial_state else "noh0",
                str(self.dtype).removeprefix("torch."),
                *([f"P{self.proj_size}"] if self.proj_size else []),
            ]
        )

    def layer_kwargs(self) -> dict:
        kwargs: dict = {
            "num_layers": self.num_layers,
            "bias": self.bias,
            "batch_first": self.batch_first,
            "bidirectional": self.bidirectional,
            "dtype": self.dtype,
        }
        if self.cell.startswith("rnn_"):
            kwargs["nonlinearity"] = self.cell.removeprefix("rnn_")
        if self.proj_size:
            kwargs["proj_size"] = self.proj_size
        return kwargs


def layer_configs(
    cells=ALL_CELLS,
    num_layers=(1, 2, 3),
    lengths=LENGTH_MODES,
    dtypes=(torch.float32, torch.float64),
) -> list[LayerConfig]:
    flags = (False, True)
    return [
        LayerConfig(*combo)
        for combo in itertools.product(
            cells, num_layers, flags, flags, flags, lengths, flags, dtypes
        )
    ]


def make_layer(cls_for_cell, config: LayerConfig, seed: int = 0):
    torch.manual_seed(seed)
    return cls_for_cell(config.cell)(D, H, **config.layer_kwargs())


def sample_lengths(generator: torch.Generator) -> torch.Tensor:
    """Lengths in [1, T], with the first sequence full so padded and packed shapes agree."""
    lengths = torch.randint(1, T + 1, (B,), generator=generator)
    lengths[0] = T
    return lengths
