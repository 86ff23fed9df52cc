"""The typed config of a forecast run: one dataclass per section and ``ForecastSettings``, the run's
sections together. Torch-free, so that ``rnnkit train forecast --help`` lists every field
without loading torch; saved in every checkpoint as ``config.json``
(``rnnkit.common.config.to_dict``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.common.config import ConfigError, option
from rnnkit.common.names import CELL_NAMES
from rnnkit.common.variants import CellVariants
from rnnkit.train.config import OptimConfig, TrainerConfig

BUILTIN = ("sunspots", "co2")
"""The built-in series (``rnnkit.tasks.forecast.series.builtin``)."""


@dataclass
class ForecasterConfig(CellVariants):
    cell: str = option("gru", "recurrent cell kind", choices=CELL_NAMES)
    hidden_size: int = option(64, "hidden units per layer", min=1)
    num_layers: int = option(1, "stacked recurrent layers", min=1)
    window: int = option(24, "past steps the model reads", min=1)
    horizon: int = option(12, "steps ahead to forecast", min=1)
    strategy: str = option("direct", "multi-step strategy", choices=("direct", "recursive"))
    gaussian: bool = option(False, "also predict a variance (prediction intervals)")
    dropout: float = option(0.0, "dropout between layers and before the head", min=0, lt=1)


@dataclass
class ForecastDataConfig:
    csv: str | None = option(None, "CSV file with a header (else a built-in series)")
    time_column: str = option("time", "the CSV's time column")
    columns: str | None = option(None, "comma-separated value columns (none: all others)")
    builtin: str = option("sunspots", "built-in series when no CSV", choices=BUILTIN)
    valid_fraction: float = option(0.1, "share of the series for validation", gt=0, lt=1)
    test_fraction: float = option(0.1, "share of the series held out at the end", gt=0, lt=1)
    season: int = option(1, "seasonal period m for seasonal naive and MASE", min=1)
    difference: bool = option(False, "model the first differences (for a trending series)")
    arima_order: str = option("2,0,1", "p,d,q of the ARIMA baseline (integers >= 0)")
    batch_size: int = option(32, "windows per batch", min=1)

    def validate(self) -> ForecastDataConfig:
        """The checks that span fields, and the ARIMA order parsed (``order``)."""
        self.order()
        if self.valid_fraction + self.test_fraction >= 1:
            raise ConfigError(
                "--data.valid_fraction + --data.test_fraction must be < 1 (the rest trains), "
                f"got {self.valid_fraction} + {self.test_fraction}"
            )
        return self

    def order(self) -> tuple[int, int, int]:
        """``arima_order`` as (p, d, q)."""
        parts = [p.strip() for p in self.arima_order.split(",")]
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ConfigError(
                "--data.arima_order must be p,d,q (three integers >= 0, e.g. 2,0,1), "
                f"got {self.arima_order!r}"
            )
        p, d, q = (int(v) for v in parts)
        return p, d, q


@dataclass
class ForecastSettings:
    """A forecaster run: its sections, each at the task's defaults."""

    model: ForecasterConfig = field(default_factory=ForecasterConfig)
    data: ForecastDataConfig = field(default_factory=ForecastDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-3))
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(out="runs/forecast", epochs=50)
    )


def defaults() -> ForecastSettings:
    return ForecastSettings()
