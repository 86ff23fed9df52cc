"""Time-series forecasting: a recurrent forecaster (direct or recursive, optional Gaussian
head) against naive, seasonal-naive and ARIMA baselines."""

from rnnkit.tasks.forecast.api import (
    ForecastDataConfig,
    ForecastRun,
    configure,
    defaults,
    forecast_series,
    load,
    train,
)
from rnnkit.tasks.forecast.model import Forecaster, ForecasterConfig

__all__ = [
    "ForecastDataConfig",
    "ForecastRun",
    "Forecaster",
    "ForecasterConfig",
    "configure",
    "defaults",
    "forecast_series",
    "load",
    "train",
]
