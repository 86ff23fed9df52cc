"""The typed config of a music run: one dataclass per section and ``MusicSettings``, the run's
sections together. Torch-free, so that ``rnnkit train music --help`` lists every field
without loading torch; saved in every checkpoint as ``config.json``
(``rnnkit.common.config.to_dict``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.common.config import ConfigError, option
from rnnkit.common.names import CELL_NAMES
from rnnkit.common.variants import CellVariants
from rnnkit.train.config import OptimConfig, TrainerConfig


@dataclass
class MusicConfig(CellVariants):
    cell: str = option("gru_reset_before", "recurrent cell kind", choices=CELL_NAMES)
    hidden_size: int = option(46, "hidden units (Chung 2014: tanh 100, GRU 46, LSTM 36)", min=1)
    num_layers: int = option(1, "stacked recurrent layers", min=1)
    dropout: float = option(0.0, "dropout between layers and before the output", min=0, lt=1)
    low: int = option(21, "lowest MIDI pitch of the roll", min=0, max=127)
    high: int = option(108, "highest MIDI pitch of the roll", min=0, max=127)

    def validate(self) -> MusicConfig:
        super().validate()
        if self.low >= self.high:
            raise ConfigError(f"--model.low must be < --model.high, got {self.low} and {self.high}")
        return self


@dataclass
class MusicDataConfig:
    path: str | None = option(None, "JSON file {split: [chorale, ...]} (JSB Chorales layout)")
    train_split: str = option("train", "the split to train on")
    valid_split: str = option("valid", "the split to validate on")
    batch_size: int = option(8, "chorales per batch", min=1)


@dataclass
class MusicSettings:
    """A music-model run: its sections, each at the task's defaults."""

    model: MusicConfig = field(default_factory=MusicConfig)
    data: MusicDataConfig = field(default_factory=MusicDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(optimizer="rmsprop", lr=1e-3))
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(out="runs/music", epochs=100, clip_norm=1.0)
    )


def defaults() -> MusicSettings:
    return MusicSettings()
