"""Time series from CSV files or shipped data sets, scaling fitted on the training part
only, and (window -> horizon) examples for forecasting.

Shapes: values [N, V] (N time steps, V variables), windows [M, L, V], targets [M, H, V].
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.data.text import DataError, read_text
from rnnkit.tasks.forecast.config import BUILTIN


@dataclass(frozen=True)
class Series:
    times: tuple[str, ...]
    values: np.ndarray  # [N, V] float64
    columns: tuple[str, ...]


def read_csv(
    path: str | os.PathLike[str], time_column: str, value_columns: list[str] | None = None
) -> Series:
    """A CSV with a header: one time column and numeric value columns (all the others by
    default). Errors name the file, line and column."""
    p = Path(path)
    rows = list(csv.reader(read_text(p).splitlines()))
    if not rows:
        raise DataError(f"{p}: empty file")
    header = rows[0]
    if time_column not in header:
        raise DataError(f"{p}:1: no time column {time_column!r} in the header {header}")
    columns = value_columns or [c for c in header if c != time_column]
    for c in columns:
        if c not in header:
            raise DataError(f"{p}:1: no column {c!r} in the header {header}")
    if not columns:
        raise DataError(f"{p}:1: no value columns besides {time_column!r}")
    t_index, v_index = header.index(time_column), [header.index(c) for c in columns]
    times, values = [], []
    for line, row in enumerate(rows[1:], 2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{p}:{line}: {len(row)} fields, the header has {len(header)}")
        try:
            values.append([float(row[i]) for i in v_index])
        except ValueError:
            bad = next(c for c, i in zip(columns, v_index, strict=True) if not _is_float(row[i]))
            raise DataError(
                f"{p}:{line}: column {bad!r} is not a number: {row[header.index(bad)]!r}"
            ) from None
        times.append(row[t_index])
    if len(values) < 3:
        raise DataError(f"{p}: {len(values)} rows; a series needs at least 3")
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        line = 2 + int(np.argwhere(~np.isfinite(array))[0][0])
        raise DataError(f"{p}:{line}: a missing or non-finite value (fill or drop it first)")
    return Series(tuple(times), array, tuple(columns))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def builtin(name: str) -> Series:
    """Real series that ship with statsmodels: yearly sunspot numbers 1700-2008, and the
    Mauna Loa CO2 record as monthly means (weekly gaps interpolated)."""
    import statsmodels.api as sm

    if name == "sunspots":
        frame = sm.datasets.sunspots.load_pandas().data
        return Series(
            tuple(str(int(y)) for y in frame["YEAR"]),
            frame[["SUNACTIVITY"]].to_numpy(np.float64),
            ("SUNACTIVITY",),
        )
    if name == "co2":
        weekly = sm.datasets.co2.load_pandas().data["co2"].interpolate()
        monthly = weekly.resample("MS").mean().dropna()
        return Series(
            tuple(str(t.date()) for t in monthly.index),
            monthly.to_numpy(np.float64)[:, None],
            ("co2",),
        )
    raise DataError(f"unknown built-in series {name!r}; choose one of {BUILTIN}")


@dataclass(frozen=True)
class Scaler:
    """Standardisation with statistics of the training part only (no look-ahead)."""

    mean: np.ndarray  # [V]
    std: np.ndarray  # [V]

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(np.asarray(d["mean"]), np.asarray(d["std"]))


def split_points(n: int, valid_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(end of train, end of validation): the test tail is values[valid_end:]."""
    if not (
        0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1
    ):
        raise ValueError("valid_fraction and test_fraction must be in (0, 1) and sum below 1")
    valid_end = n - max(1, round(n * test_fraction))
    train_end = valid_end - max(1, round(n * valid_fraction))
    return train_end, valid_end


def windows(values: np.ndarray, window: int, horizon: int, start: int, end: int):
    """Examples whose forecast origin o (the first predicted step) lies in [start, end):
    -> (inputs [M, window, V] = values[o-window:o], targets [M, horizon, V] = values[o:o+horizon],
    origins [M]); only origins with a full window and a full horizon before ``end``."""
    origins = np.arange(max(start, window), end - horizon + 1)
    if len(origins) == 0:
        raise ValueError(
            f"no forecast origin in [{start}, {end}) leaves a window of {window} "
            f"and a horizon of {horizon}"
        )
    inputs = np.stack([values[o - window : o] for o in origins])
    targets = np.stack([values[o : o + horizon] for o in origins])
    return inputs, targets, origins
