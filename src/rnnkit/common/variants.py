"""The recurrent stack's variants and regularisers, as every task's model config offers
them (``--model.proj_size 256``, ``--model.recurrent_dropout 0.25``, ``--model.zoneout
0.1``, ...). Torch-free, like the configs that inherit it; ``rnnkit.nn.factory`` turns
the fields into the layer's arguments (``variant_arguments``). Each is off by default, so
a config without them builds the same model as before.

    proj_size           LSTM h projected to P units (Sak et al. 2014; torch.nn's argument)
    recurrent_dropout   on h where it enters the recurrent product, one mask per sequence
                        (Gal & Ghahramani 2016)
    weight_drop         DropConnect on the recurrent weights, one mask per batch
                        (Merity et al. 2017, AWD-LSTM)
    zoneout             each unit of h (and c) keeps its previous value with this
                        probability per step; its expectation in evaluation (Krueger
                        et al. 2016); ``zoneout_cell`` gives c its own rate
    locked_dropout      the model's ``dropout`` on sequences (input, between layers,
                        output) uses one mask per sequence, shared over time
                        (Gal & Ghahramani 2016, sec. 4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from rnnkit.common.config import ConfigError, option
from rnnkit.common.names import CELLS_WITH_MEMORY, PROJECTABLE_CELLS

VARIANT_FIELDS = (
    "proj_size",
    "recurrent_dropout",
    "weight_drop",
    "zoneout",
    "zoneout_cell",
    "locked_dropout",
)


@dataclass
class CellVariants:
    """The fields every task's model config inherits (it has ``cell`` and
    ``hidden_size``); ``validate`` checks them against those two."""

    proj_size: int = option(0, "LSTM: project h to this many units (Sak 2014); 0: off", min=0)
    recurrent_dropout: float = option(
        0.0, "dropout on h in the recurrent product, one mask per sequence (Gal 2016)", min=0, lt=1
    )
    weight_drop: float = option(
        0.0, "DropConnect on the recurrent weights, one mask per batch (Merity 2017)", min=0, lt=1
    )
    zoneout: float = option(
        0.0, "chance each unit of h (and c) keeps its value at a step (Krueger 2016)", min=0, lt=1
    )
    zoneout_cell: float | None = option(
        None, "LSTM: zoneout of c (none: --model.zoneout)", min=0, lt=1
    )
    locked_dropout: bool = option(
        False, "--model.dropout on sequences uses one mask per sequence (Gal 2016)"
    )

    def validate(self) -> Self:
        """The checks that span fields; a task config that adds its own calls this. (``cell``
        and ``hidden_size`` are the task config's own fields, declared after these.)"""
        self.check_variants(getattr(self, "cell"), getattr(self, "hidden_size"))  # noqa: B009
        return self

    def check_variants(self, cell: str, hidden_size: int) -> None:
        """Refuse a combination the cell does not have, naming the flags."""
        if self.proj_size and cell not in PROJECTABLE_CELLS:
            raise ConfigError(
                f"--model.proj_size needs --model.cell {' or '.join(PROJECTABLE_CELLS)}, "
                f"got {cell!r}"
            )
        if self.proj_size >= hidden_size:
            raise ConfigError(
                f"--model.proj_size must be below --model.hidden_size ({hidden_size}), "
                f"got {self.proj_size}"
            )
        if self.zoneout_cell is not None and cell not in CELLS_WITH_MEMORY:
            raise ConfigError(
                f"--model.zoneout_cell needs a cell with a memory c "
                f"({', '.join(CELLS_WITH_MEMORY)}), got {cell!r}"
            )
