"""`rnnkit predict`: label sentences with a trained classifier or tagger."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli import app
from rnnkit.cli.lm import _clean_errors


@app.command("predict")
def predict_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory (uses best/) or checkpoint.")],
    text: Annotated[str | None, typer.Argument(help="A sentence (else --file or stdin).")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="One sentence per line.")] = None,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per sentence."),
) -> None:
    """Label sentences with a trained classifier or tagger.

    A classifier prints each label with its probability; a tagger prints CoNLL columns
    (token tag), or JSON spans with --json. A tagger's sentences are split on whitespace.
    """
    from rnnkit.data.text import read_text
    from rnnkit.tasks.classify import api as classify
    from rnnkit.tasks.tag import api as tag
    from rnnkit.train import checkpoint as ckpt

    with _clean_errors():
        if text is not None:
            texts = [text]
        elif file is not None:
            texts = [line for line in read_text(file).splitlines() if line.strip()]
        else:
            texts = [line for line in sys.stdin.read().splitlines() if line.strip()]
        if not texts:
            raise ValueError("no sentences to label: give TEXT, --file, or lines on stdin")
        meta = ckpt.read_json(ckpt.resolve(checkpoint), ckpt.CONFIG_FILE).get("meta", {})
        if meta.get("task") == "tag":
            tagged = tag.predict(checkpoint, [t.split() for t in texts])
            typer.echo(tag.format_tagged(tagged, as_json))
        elif meta.get("task") == "classify":
            typer.echo(classify.format_predictions(classify.predict(checkpoint, texts), as_json))
        else:
            raise ValueError(
                f"{checkpoint} holds a {meta.get('task')!r} model; "
                "predict needs a classifier or a tagger"
            )


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

    from rnnkit.tasks.forecast import api as forecast
    from rnnkit.tasks.forecast.series import read_csv
    from rnnkit.train import checkpoint as ckpt

    with _clean_errors():
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
