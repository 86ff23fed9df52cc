"""Time-series forecasting: a recurrent forecaster (direct or recursive, optional Gaussian
head) against naive, seasonal-naive and ARIMA baselines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.tasks.forecast.api import (
        ForecastRun,
        configure,
        evaluate_file,
        forecast_series,
        load,
        train,
    )
    from rnnkit.tasks.forecast.config import (
        ForecastDataConfig,
        ForecasterConfig,
        ForecastSettings,
        defaults,
    )
    from rnnkit.tasks.forecast.model import Forecaster

__all__ = [
    "ForecastDataConfig",
    "ForecastRun",
    "ForecastSettings",
    "Forecaster",
    "ForecasterConfig",
    "configure",
    "defaults",
    "evaluate_file",
    "forecast_series",
    "load",
    "train",
]

# Loaded on first use: ``rnnkit.tasks.forecast.config`` must import without torch.
__getattr__ = lazy_exports(
    __name__,
    {
        "ForecastDataConfig": "rnnkit.tasks.forecast.config",
        "ForecastRun": "rnnkit.tasks.forecast.api",
        "ForecastSettings": "rnnkit.tasks.forecast.config",
        "Forecaster": "rnnkit.tasks.forecast.model",
        "ForecasterConfig": "rnnkit.tasks.forecast.config",
        "configure": "rnnkit.tasks.forecast.api",
        "defaults": "rnnkit.tasks.forecast.config",
        "evaluate_file": "rnnkit.tasks.forecast.api",
        "forecast_series": "rnnkit.tasks.forecast.api",
        "load": "rnnkit.tasks.forecast.api",
        "train": "rnnkit.tasks.forecast.api",
    },
)
