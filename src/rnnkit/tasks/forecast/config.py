"""The typed config of a forecast run: one dataclass per section and ``ForecastSettings``, the run's
sections together. Torch-free, so that ``rnnkit train forecast --help`` lists every field
without loading torch; saved in every checkpoint as ``config.json``
(``rnnkit.common.config.to_dict``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.common.config import option
from rnnkit.common.names import CELL_NAMES
from rnnkit.train.config import OptimConfig, TrainerConfig

BUILTIN = ("sunspots", "co2")
"""The built-in series (``rnnkit.tasks.forecast.series.builtin``)."""


@dataclass
class ForecasterConfig:
    cell: str = option("gru", "recurrent cell kind", choices=CELL_NAMES)
    hidden_size: int = option(64, "hidden units per layer", min=1)
    num_layers: int = option(1, "stacked recurrent layers", min=1)
    window: int = option(24, "past steps the model reads", min=1)
    horizon: int = option(12, "steps ahead to forecast", min=1)
    strategy: str = option("direct", "multi-step strategy", choices=("direct", "recursive"))
    gaussian: bool = option(False, "also predict a variance (prediction intervals)")
    dropout: float = option(0.0, "dropout between layers and before the head")


@dataclass
class ForecastDataConfig:
    csv: str | None = option(None, "CSV file with a header (else a built-in series)")
    time_column: str = option("time", "the CSV's time column")
    columns: str | None = option(None, "comma-separated value columns (none: all others)")
    builtin: str = option("sunspots", "built-in series when no CSV", choices=BUILTIN)
    valid_fraction: float = option(0.1, "share of the series for validation")
    test_fraction: float = option(0.1, "share of the series held out at the end")
    season: int = option(1, "seasonal period m for seasonal naive and MASE", min=1)
    difference: bool = option(False, "model the first differences (for a trending series)")
    arima_order: str = option("2,0,1", "p,d,q of the ARIMA baseline")
    batch_size: int = option(32, "windows per batch", min=1)


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
