"""Forecasting: CSV reading, no scaler leakage, windows, baselines, models, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.text import DataError
from rnnkit.tasks.forecast import api as forecast
from rnnkit.tasks.forecast.model import Forecaster, ForecasterConfig
from rnnkit.tasks.forecast.series import Scaler, read_csv, split_points, windows


def _csv(tmp_path, n=120, name="s.csv"):
    t = np.arange(n)
    a = 10 + 3 * np.sin(2 * np.pi * t / 12) + 0.05 * t
    b = np.cos(2 * np.pi * t / 12)
    path = tmp_path / name
    lines = ["time,a,b"] + [f"{i},{x:.6f},{y:.6f}" for i, x, y in zip(t, a, b, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_read_csv_and_errors(tmp_path):
    series = read_csv(_csv(tmp_path), "time")
    assert series.columns == ("a", "b") and series.values.shape == (120, 2)
    assert read_csv(_csv(tmp_path), "time", ["b"]).values.shape == (120, 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("time,a\n0,1\n1,x\n2,3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv:3: column 'a' is not a number: 'x'"):
        read_csv(bad, "time")
    with pytest.raises(DataError, match=r"bad\.csv:1: no time column 'date'"):
        read_csv(bad, "date")
    gap = tmp_path / "gap.csv"
    gap.write_text("time,a\n0,1\n1,nan\n2,3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"gap\.csv:3: a missing or non-finite value"):
        read_csv(gap, "time")


def test_scaler_sees_only_the_training_part(tmp_path, monkeypatch):
    """Changing every value after the training part leaves the fitted scaler unchanged."""
    fitted = []
    original = Scaler.fit.__func__

    def spy(cls, values):
        scaler = original(cls, values)
        fitted.append(scaler)
        return scaler

    monkeypatch.setattr(Scaler, "fit", classmethod(spy))
    series = read_csv(_csv(tmp_path), "time")
    train_end = split_points(120, 0.1, 0.1)[0]
    sections = forecast.configure(
        overrides=(
            "--data.csv",
            str(_csv(tmp_path)),
            "--data.time_column",
            "time",
            "--trainer.epochs",
            "1",
            "--trainer.progress",
            "false",
            "--trainer.out",
            str(tmp_path / "r1"),
            "--model.hidden_size",
            "4",
            "--data.season",
            "12",
        )
    )
    forecast.train(sections, log=lambda s: None)
    changed = tmp_path / "changed.csv"
    text = _csv(tmp_path).read_text().splitlines()
    tail = [f"{i},{1e6},{-1e6}" for i in range(train_end, 120)]
    changed.write_text("\n".join(text[: train_end + 1] + tail) + "\n", encoding="utf-8")
    sections = forecast.configure(
        overrides=(
            "--data.csv",
            str(changed),
            "--trainer.epochs",
            "1",
            "--trainer.progress",
            "false",
            "--trainer.out",
            str(tmp_path / "r2"),
            "--model.hidden_size",
            "4",
            "--data.season",
            "12",
        )
    )
    forecast.train(sections, log=lambda s: None)
    assert np.array_equal(fitted[0].mean, fitted[1].mean)
    assert np.array_equal(fitted[0].std, fitted[1].std)
    assert np.allclose(fitted[0].mean, series.values[:train_end].mean(0))


def test_windows_and_baselines():
    values = np.arange(30, dtype=float)[:, None]
    x, y, origins = windows(values, 4, 3, 10, 20)
    assert origins.tolist() == list(range(10, 18))
    assert x[0, :, 0].tolist() == [6, 7, 8, 9] and y[0, :, 0].tolist() == [10, 11, 12]
    out = forecast.baselines(values, origins, 3, 2, (1, 0, 0), 10)
    assert out["naive"][0, :, 0].tolist() == [9, 9, 9]
    # seasonal naive, m = 2: steps o, o+1, o+2 take o-2, o-1, o-2 (the same phase)
    assert out["seasonal naive (m=2)"][0, :, 0].tolist() == [8, 9, 8]
    assert out["ARIMA(1, 0, 0)"].shape == (8, 3, 1)


@pytest.mark.parametrize("strategy", ["direct", "recursive"])
@pytest.mark.parametrize("gaussian", [False, True])
def test_forecaster_shapes(strategy: str, gaussian: bool):
    config = ForecasterConfig(
        hidden_size=6, window=5, horizon=4, strategy=strategy, gaussian=gaussian
    )
    model = Forecaster(config, 2)
    x, y = torch.randn(3, 5, 2), torch.randn(3, 4, 2)
    assert torch.isfinite(model.loss(x, y))
    mean, std = model.forecast(x)
    assert mean.shape == (3, 4, 2)
    assert (std is None) != gaussian and (std is None or bool((std > 0).all()))


def test_differencing_integrates_back():
    """A model that forecasts zero differences forecasts the last value (with std that
    grows like sqrt(h)); one that forecasts the mean difference continues the trend."""
    values = np.arange(40, dtype=float)[:, None] * 2.0
    model = Forecaster(ForecasterConfig(hidden_size=4, window=5, horizon=3, gaussian=True), 1)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()  # mean 0 and log variance 0 in scaled units
    scaler = Scaler(np.array([2.0]), np.array([0.5]))  # so scaled 0 is a difference of 2
    mean, std = forecast.model_forecast(model, scaler, values, np.array([10, 20]), 3, True)
    assert mean[:, :, 0].tolist() == [[20, 22, 24], [40, 42, 44]]
    assert np.allclose(std[0, :, 0], 0.5 * np.sqrt([1, 2, 3]))


@pytest.mark.parametrize("difference", ["false", "true"])
def test_cli_train_and_forecast(tmp_path, difference: str):
    path = _csv(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "forecast",
            "--csv",
            str(path),
            "--trainer.epochs",
            "2",
            "--trainer.out",
            str(out),
            "--trainer.progress",
            "false",
            "--model.hidden_size",
            "8",
            "--model.window",
            "12",
            "--model.horizon",
            "3",
            "--model.gaussian",
            "true",
            "--data.season",
            "12",
            "--data.difference",
            difference,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "seasonal naive (m=12)" in result.output and (out / "forecast.png").is_file()
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["rnnkit gru"]) == {"MAE", "RMSE", "MASE"}
    result = CliRunner().invoke(app, ["forecast", str(out), "--csv", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert np.array(data["mean"]).shape == (3, 2)
    assert (np.array(data["low"]) < np.array(data["high"])).all()

    result = CliRunner().invoke(app, ["eval", str(out), str(path), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    first = 12 + (difference == "true")  # the first origin with a full window
    assert figures["horizon"] == 3 and figures["origins"] == 120 - first - 2
    assert 0 < figures["MAE"] <= figures["RMSE"] and figures["MASE"] > 0
    assert "MAE" in CliRunner().invoke(app, ["eval", str(out), str(path)]).output
