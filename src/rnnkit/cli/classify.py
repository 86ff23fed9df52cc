"""`rnnkit train classify` and `rnnkit train tag`: classifiers and taggers from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli.lm import _clean_errors, train_app


@train_app.command(
    "classify", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def train_classify(
    ctx: typer.Context,
    train: Annotated[Path | None, typer.Option("--train", help="Labelled training file.")] = None,
    valid: Annotated[Path | None, typer.Option("--valid", help="Validation file.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="JSON or TOML config.")] = None,
) -> None:
    """Train a sentence classifier (embedding -> BiRNN -> pooling -> softmax).

    Files: `label<space>text` lines (SST), CSV/TSV with a header, or JSONL. Overrides:
    --model.cell gru --model.pooling attention --data.vectors glove.txt --trainer.epochs 5
    (every field: see rnnkit.tasks.classify.api and rnnkit.tasks.classify.model).
    """
    from rnnkit.tasks.classify import api as classify

    with _clean_errors():
        args = list(ctx.args)
        for flag, value in (("--data.train", train), ("--data.valid", valid)):
            if value is not None:
                args += [flag, str(value)]
        run = classify.train(classify.configure(config, tuple(args)))
        typer.echo(run.report.text())
        typer.echo(f"\nrun directory: {run.out_dir} (report.txt, confusion.png, best/, last/)")


@train_app.command(
    "tag", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def train_tag(
    ctx: typer.Context,
    train: Annotated[Path | None, typer.Option("--train", help="CoNLL training file.")] = None,
    valid: Annotated[Path | None, typer.Option("--valid", help="CoNLL validation file.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="JSON or TOML config.")] = None,
) -> None:
    """Train a sequence tagger (characters + words -> BiRNN -> CRF or softmax).

    Overrides: --model.output softmax --model.char_embedding_size 0 --data.scheme IOB2
    --trainer.epochs 5 (every field: see rnnkit.tasks.tag.api and rnnkit.tasks.tag.model).
    """
    from rnnkit.tasks.tag import api as tag

    with _clean_errors():
        args = list(ctx.args)
        for flag, value in (("--data.train", train), ("--data.valid", valid)):
            if value is not None:
                args += [flag, str(value)]
        run = tag.train(tag.configure(config, tuple(args)))
        typer.echo(run.scores.report())
        typer.echo(f"\nrun directory: {run.out_dir} (report.txt, valid.conll, best/, last/)")


@train_app.command(
    "music", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def train_music(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Option("--data", help="Chorales JSON file.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="JSON or TOML config.")] = None,
) -> None:
    """Train a polyphonic music model on piano rolls (Chung et al. 2014's setting).

    Overrides: --model.cell lstm --model.hidden_size 36 --trainer.epochs 50.
    """
    from rnnkit.tasks.music import api as music

    with _clean_errors():
        args = list(ctx.args) + (["--data.path", str(data)] if data is not None else [])
        run = music.train(music.configure(config, tuple(args)))
        typer.echo(
            f"{run.parameters:,} parameters; best checkpoint: train NLL "
            f"{run.train_nll:.3f}, valid NLL {run.valid_nll:.3f} per time step"
        )
        typer.echo(f"run directory: {run.out_dir}")


@train_app.command(
    "forecast", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def train_forecast(
    ctx: typer.Context,
    csv: Annotated[Path | None, typer.Option("--csv", help="CSV with a time column.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="JSON or TOML config.")] = None,
) -> None:
    """Train a forecaster and compare it with naive, seasonal-naive and ARIMA baselines.

    The comparison is on the series' held-out tail (MAE, RMSE, MASE).
    Without --csv: a built-in series (--data.builtin sunspots|co2). Overrides:
    --data.time_column date --data.columns a,b --data.season 12 --model.horizon 6
    --model.strategy recursive --model.gaussian true.
    """
    from rnnkit.tasks.forecast import api as forecast

    with _clean_errors():
        args = list(ctx.args) + (["--data.csv", str(csv)] if csv is not None else [])
        run = forecast.train(forecast.configure(config, tuple(args)))
        typer.echo(run.table)
        typer.echo(f"\nrun directory: {run.out_dir} (scores.json, forecast.png, best/, last/)")
