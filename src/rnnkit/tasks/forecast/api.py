"""Forecasting as a trainer task; evaluation against naive, seasonal-naive and ARIMA
baselines on a held-out tail; and the Python API.

    from rnnkit.tasks.forecast import api as forecast
    run = forecast.train(forecast.configure(data={"builtin": "sunspots", "season": 11}))
    print(run.table)

The series is cut in time order: train, validation, then a test tail. The scaler is fit
on the training part alone, so nothing from later reaches the inputs. On the tail every
method forecasts ``horizon`` steps from every origin o (rolling origin, real history up
to o - 1) and MAE, RMSE and MASE (Hyndman & Koehler 2006: MAE over the in-sample MAE of
the seasonal-naive one-step forecast on the training part) average over all origins and
steps, in the series' own units.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rnnkit
from rnnkit.common import config as cfg
from rnnkit.common.io import atomic_savefig, atomic_write_text
from rnnkit.data.padded import batches
from rnnkit.tasks.forecast.config import (
    ForecastDataConfig,
    ForecasterConfig,
    ForecastSettings,
    defaults,
)
from rnnkit.tasks.forecast.model import Forecaster
from rnnkit.tasks.forecast.series import (
    Scaler,
    Series,
    builtin,
    read_csv,
    split_points,
    windows,
)
from rnnkit.train import checkpoint as ckpt
from rnnkit.train import distributed, pretrained
from rnnkit.train.trainer import FitResult, StepResult, Trainer

SCALER_FILE = "scaler.json"


def configure(
    file: str | Path | None = None, overrides: tuple[str, ...] = (), **sections: Any
) -> ForecastSettings:
    return cfg.merge(cfg.resolve(defaults(), file, overrides), sections, "configure()")


def load_series(data: ForecastDataConfig) -> Series:
    if data.csv is None:
        return builtin(data.builtin)
    columns = [c.strip() for c in data.columns.split(",")] if data.columns else None
    return read_csv(data.csv, data.time_column, columns)


class ForecastTask:
    unit = "windows"  # what StepResult.count counts

    def __init__(
        self,
        scaled: np.ndarray,
        model_c: ForecasterConfig,
        train_end: int,
        valid_end: int,
        batch_size: int,
        seed: int,
    ) -> None:
        L, H = model_c.window, model_c.horizon
        x, y, _ = windows(scaled, L, H, 0, train_end)
        self.train = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
        x, y, _ = windows(scaled, L, H, train_end, valid_end)
        self.valid = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
        self.batch_size, self.seed = batch_size, seed

    def batches_per_epoch(self, epoch: int) -> int:
        return math.ceil(len(self.train[0]) / self.batch_size)

    def batches(self, epoch: int, start: int) -> Iterator[Any]:
        for batch in batches(len(self.train[0]), self.batch_size, self.seed, epoch, start):
            rows = distributed.share(batch)  # under torchrun, this process's rows
            yield (self.train[0][rows], self.train[1][rows]) if rows else None

    def train_step(self, model: torch.nn.Module, batch: Any, carry: Any) -> StepResult:
        assert isinstance(model, Forecaster)
        return StepResult(model.loss(*batch), len(batch[0]))

    def evaluate(self, model: torch.nn.Module) -> float:
        """Mean squared error of the full-horizon forecast on validation (scaled units)."""
        assert isinstance(model, Forecaster)
        mean, _ = model.forecast(self.valid[0])
        return float(((mean - self.valid[1]) ** 2).mean())

    def describe(self, loss: float) -> dict[str, float]:
        return {}


def errors(forecasts: np.ndarray, actual: np.ndarray, scale: float) -> dict[str, float]:
    """MAE, RMSE, MASE over every origin and step; arrays [M, H, V]."""
    diff = forecasts - actual
    mae = float(np.abs(diff).mean())
    return {"MAE": mae, "RMSE": float(np.sqrt((diff**2).mean())), "MASE": mae / scale}


def baselines(
    values: np.ndarray,
    origins: np.ndarray,
    horizon: int,
    season: int,
    arima_order: tuple[int, int, int],
    train_end: int,
) -> dict[str, np.ndarray]:
    """Forecasts [M, H, V] of naive, seasonal naive and (for the first variable) ARIMA."""
    steps = np.arange(horizon)
    naive = np.stack([np.repeat(values[o - 1][None], horizon, 0) for o in origins])
    lag = season * (steps // season + 1)  # the same phase, one or more seasons back
    seasonal = np.stack([values[o + steps - lag] for o in origins])
    out = {"naive": naive, f"seasonal naive (m={season})": seasonal}
    if values.shape[1] == 1:
        from statsmodels.tsa.arima.model import ARIMA

        fitted = ARIMA(values[:train_end, 0], order=arima_order).fit()
        full = fitted.apply(values[:, 0])
        out[f"ARIMA{arima_order}"] = np.stack(
            [
                full.get_prediction(start=o, end=o + horizon - 1, dynamic=True).predicted_mean
                for o in origins
            ]
        )[..., None]
    return out


@dataclass
class ForecastRun:
    out_dir: Path
    result: FitResult
    scores: dict[str, dict[str, float]]

    @property
    def table(self) -> str:
        lines = [f"{'method':<28}{'MAE':>10}{'RMSE':>10}{'MASE':>8}"]
        for name, s in self.scores.items():
            lines.append(f"{name:<28}{s['MAE']:>10.3f}{s['RMSE']:>10.3f}{s['MASE']:>8.3f}")
        return "\n".join(lines)


def train(
    sections: ForecastSettings | None = None, log: Callable[[str], None] = print
) -> ForecastRun:
    sections = sections or defaults()
    with (
        distributed.session(sections.trainer.device, sections.trainer.threads),
        distributed.claim(sections.trainer.out) as (out_dir, _),
    ):
        return _train(sections, out_dir, distributed.main_only(log))


def _train(sections: ForecastSettings, out_dir: Path, log: Callable[[str], None]) -> ForecastRun:
    """``train`` in the claimed and locked run folder ``out_dir``."""
    model_c = sections.model
    data = sections.data
    trainer_c = sections.trainer
    series = load_series(data)
    values = series.values
    train_end, valid_end = split_points(len(values), data.valid_fraction, data.test_fraction)
    # With differencing the model sees work[j] = values[j + 1] - values[j]; a difference
    # belongs to the part of its later value, so the training part's are work[:train_end-1].
    shift = 1 if data.difference else 0
    work = np.diff(values, axis=0) if data.difference else values
    scaler = Scaler.fit(work[: train_end - shift])
    torch.manual_seed(trainer_c.seed)
    model = Forecaster(model_c, values.shape[1])
    task = ForecastTask(
        scaler.transform(work),
        model_c,
        train_end - shift,
        valid_end - shift,
        data.batch_size,
        trainer_c.seed,
    )
    meta = {
        "task": "forecast",
        "rnnkit_version": rnnkit.__version__,
        "columns": list(series.columns),
    }
    extra = {
        ckpt.CONFIG_FILE: cfg.to_dict(sections) | {"meta": meta},
        SCALER_FILE: scaler.to_dict(),
    }
    log(
        f"forecasting {', '.join(series.columns)} ({len(values)} steps: train {train_end}, "
        f"valid {valid_end - train_end}, test {len(values) - valid_end}); run in {out_dir}"
    )
    result = Trainer(model, task, trainer_c, sections.optim, out_dir, extra, log).fit()
    scores = distributed.from_main(
        lambda: _score_best(sections, out_dir, series, values, train_end, valid_end)
    )
    return ForecastRun(out_dir, result, scores)


def _score_best(
    sections: ForecastSettings,
    out_dir: Path,
    series: Any,
    values: np.ndarray,
    train_end: int,
    valid_end: int,
) -> dict[str, dict[str, float]]:
    """The best checkpoint's and the baselines' errors on the test part (scores.json,
    forecast.png)."""
    model_c, data = sections.model, sections.data
    shift = 1 if data.difference else 0
    best, scaler, _ = load(out_dir)
    H = model_c.horizon
    start = max(valid_end, model_c.window + shift)
    _, actual, origins = windows(values, model_c.window, H, start, len(values))
    mean, std = model_forecast(best, scaler, values, origins, H, data.difference)
    forecasts = {"rnnkit " + model_c.cell: mean}
    forecasts |= baselines(values, origins, H, data.season, data.order(), train_end)
    m = data.season
    scale = float(np.abs(values[m:train_end] - values[: train_end - m]).mean())
    scores = {name: errors(f, actual, scale) for name, f in forecasts.items()}
    atomic_write_text(out_dir / "scores.json", json.dumps(scores, indent=2) + "\n")
    plot(
        values,
        series.columns[0],
        valid_end,
        origins,
        forecasts,
        None if std is None else std[..., 0],
        out_dir / "forecast.png",
    )
    return scores


def model_forecast(
    model: Forecaster,
    scaler: Scaler,
    values: np.ndarray,
    origins: np.ndarray,
    horizon: int | None = None,
    difference: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean, std or None), each [M, H, V] in the series' units, forecast from every origin
    o in ``origins`` (the first forecast step) from values[:o] alone."""
    L = model.config.window
    if difference:
        work = np.diff(values, axis=0)
        x = np.stack([work[o - 1 - L : o - 1] for o in origins])
    else:
        x = np.stack([values[o - L : o] for o in origins])
    mean_t, std_t = model.forecast(torch.tensor(scaler.transform(x), dtype=torch.float32), horizon)
    mean = scaler.inverse(mean_t.double().numpy())
    std = None if std_t is None else std_t.double().numpy() * scaler.std
    if difference:  # integrate: the steps' errors add up, taken as independent
        mean = values[origins - 1][:, None] + np.cumsum(mean, axis=1)
        std = None if std is None else np.sqrt(np.cumsum(std**2, axis=1))
    return mean, std


def load(path: str | Path, which: str = "best") -> tuple[Forecaster, Scaler, bool]:
    """(model, scaler, whether it models differences) from a run or checkpoint."""
    return ckpt.load_run(path, which, _load)


def _load(checkpoint: Path) -> tuple[Forecaster, Scaler, bool]:
    record = pretrained.read(checkpoint, "forecast", (SCALER_FILE,))
    saved, sections = ckpt.open_checkpoint(checkpoint, "forecast", defaults())
    columns = saved["meta"].get("columns")
    if not isinstance(columns, list) or not columns:
        raise ckpt.CheckpointError(f"{checkpoint / ckpt.CONFIG_FILE} lacks meta.columns")
    model = ckpt.build_model(
        checkpoint, lambda: Forecaster(sections.model, len(columns)), sections.model
    )
    assert isinstance(model, Forecaster)
    scaler = ckpt.read_part(checkpoint, SCALER_FILE, lambda d: _scaler(d, len(columns)))
    model.pretrained = record
    return model.eval(), scaler, sections.data.difference


def _scaler(saved: dict[str, Any], width: int) -> Scaler:
    scaler = Scaler.from_dict(saved)
    for name, values in (("mean", scaler.mean), ("std", scaler.std)):
        if values.shape != (width,) or values.dtype.kind not in "fi":
            raise ValueError(f"{name} must be {width} numbers, one per column: {values.tolist()}")
        if not np.isfinite(values).all() or (name == "std" and (values <= 0).any()):
            raise ValueError(f"{name} must be finite (and std positive), got {values.tolist()}")
    return scaler


def _compose(
    model: Forecaster,
    scaler: Scaler | None = None,
    columns: Sequence[str] | None = None,
    difference: bool | None = None,
) -> pretrained.Pretrained:
    """``Forecaster.save_pretrained``'s parts: the scaler of the training part, the value
    columns (their names, in order), and whether the model reads first differences."""
    return pretrained.compose(
        model,
        "forecast",
        defaults(),
        files={SCALER_FILE: ("scaler", scaler and scaler.to_dict())},
        sections={"data": None if difference is None else {"difference": difference}},
        meta={"columns": ("columns", None if columns is None else list(columns))},
    )


PRETRAINED = pretrained.Adapter("forecast", lambda checkpoint: _load(checkpoint)[0], _compose)


def evaluate_file(run: str | Path, path: str | Path) -> dict[str, Any]:
    """Score a trained forecaster on a CSV series (the run's time and value columns): its
    forecasts from every origin with a full window and horizon, against the series, as
    MAE, RMSE and MASE (scaled by the file's own seasonal-naive error, data.season), and
    the naive forecast's MAE for comparison."""
    _, saved, sections = ckpt.open_run(run, "forecast", defaults())
    data = sections.data
    series = read_csv(path, data.time_column, saved["meta"]["columns"])
    model, scaler, difference = load(run)
    values, H, m = series.values, model.config.horizon, data.season
    first = model.config.window + difference  # the first origin with a full window
    _, actual, origins = windows(values, model.config.window, H, first, len(values))
    mean, _ = model_forecast(model, scaler, values, origins, H, difference)
    if len(values) <= m:
        raise ValueError(f"{path}: {len(values)} steps, too few for a season of {m}")
    scale = float(np.abs(values[m:] - values[:-m]).mean()) or 1.0
    naive = np.stack([np.repeat(values[o - 1][None], H, 0) for o in origins])
    return errors(mean, actual, scale) | {
        "naive_MAE": float(np.abs(naive - actual).mean()),
        "origins": len(origins),
        "horizon": H,
    }


def forecast_series(
    path: str | Path, values: np.ndarray, horizon: int | None = None, z: float = 1.96
) -> dict[str, np.ndarray]:
    """Forecast past the end of ``values`` [N, V]: {"mean" [H, V], and with a Gaussian
    head "low"/"high" [H, V] at mean -+ z std}."""
    cfg.check_range("horizon", horizon, min=1)
    model, scaler, difference = load(path)
    needed = model.config.window + difference
    if len(values) < needed:
        raise ValueError(f"the series has {len(values)} steps; the model reads {needed}")
    mean, std = model_forecast(model, scaler, values, np.array([len(values)]), horizon, difference)
    out = {"mean": mean[0]}
    if std is not None:
        out |= {"low": mean[0] - z * std[0], "high": mean[0] + z * std[0]}
    return out


def plot(
    values: np.ndarray,
    name: str,
    tail_start: int,
    origins: np.ndarray,
    forecasts: dict[str, np.ndarray],
    std: np.ndarray | None,
    path: Path,
) -> None:
    """The test tail with each method's forecasts from a few origins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    start = max(0, tail_start - 3 * len(forecasts[next(iter(forecasts))][0]))
    ax.plot(range(start, len(values)), values[start:, 0], color="black", label=name)
    picks = np.linspace(0, len(origins) - 1, min(4, len(origins))).astype(int)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (method, f), color in zip(forecasts.items(), colors, strict=False):
        for k, i in enumerate(picks):
            steps = origins[i] + np.arange(f.shape[1])
            ax.plot(steps, f[i, :, 0], color=color, label=method if k == 0 else None)
            if std is not None and method.startswith("rnnkit"):
                ax.fill_between(
                    steps,
                    f[i, :, 0] - 1.96 * std[i],
                    f[i, :, 0] + 1.96 * std[i],
                    color=color,
                    alpha=0.2,
                )
    ax.axvline(tail_start, color="grey", linestyle=":")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
