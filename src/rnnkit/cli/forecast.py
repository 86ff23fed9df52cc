"""`rnnkit train forecast` and `rnnkit forecast`: forecasters from the shell
(`rnnkit eval RUN FILE` scores one, see ``rnnkit.cli.runs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli import TRAIN_SETTINGS, app, overrides_epilog, train_app, with_files
from rnnkit.cli.errors import boundary
from rnnkit.tasks.forecast import config


@train_app.command(
    "forecast", context_settings=TRAIN_SETTINGS, epilog=overrides_epilog(config.defaults())
)
def train_forecast(
    ctx: typer.Context,
    csv: Annotated[Path | None, typer.Option("--csv", help="CSV with a time column.")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="JSON or TOML config.")
    ] = None,
) -> None:
    """Train a forecaster and compare it with naive, seasonal-naive and ARIMA baselines.

    The comparison is on the series' held-out tail (MAE, RMSE, MASE).
    Without --csv: a built-in series (--data.builtin sunspots|co2).
    """
    from rnnkit.tasks.forecast import api as forecast

    with boundary():
        args = with_files(ctx.args, csv=csv)
        run = forecast.train(forecast.configure(config_file, tuple(args)))
        typer.echo(run.table)
        typer.echo(f"\nrun directory: {run.out_dir} (scores.json, forecast.png, best/, last/)")


@app.command("forecast")
def forecast_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory (uses best/) or checkpoint.")],
    csv: Annotated[Path, typer.Option("--csv", help="The series to continue (CSV).")],
    time_column: str = typer.Option("time", "--time-column", help="The CSV's time column."),
    steps: int | None = typer.Option(None, "--steps", help="Steps ahead (default: horizon)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Forecast past the end of a series with a trained forecaster.

    With a Gaussian head the forecast comes with 95% prediction intervals.
    """
    import json

    from rnnkit.common.config import check_range
    from rnnkit.tasks.forecast import api as forecast
    from rnnkit.tasks.forecast.series import read_csv
    from rnnkit.train import checkpoint as ckpt

    with boundary():
        check_range("--steps", steps, min=1)
        meta = ckpt.read_json(ckpt.resolve(checkpoint), ckpt.CONFIG_FILE).get("meta", {})
        series = read_csv(csv, time_column, meta.get("columns"))
        out = forecast.forecast_series(checkpoint, series.values, steps)
        if as_json:
            typer.echo(json.dumps({k: v.tolist() for k, v in out.items()}))
            return
        for h, mean in enumerate(out["mean"], 1):
            interval = ""
            if "low" in out:
                interval = (
                    "  95% ["
                    + ", ".join(
                        f"{lo:.3f}..{hi:.3f}"
                        for lo, hi in zip(out["low"][h - 1], out["high"][h - 1], strict=True)
                    )
                    + "]"
                )
            typer.echo(f"+{h}: " + ", ".join(f"{v:.3f}" for v in mean) + interval)
