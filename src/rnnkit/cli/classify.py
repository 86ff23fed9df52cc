"""`rnnkit train classify` and `rnnkit predict`: sequence classification from the shell."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli import app
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
    (every field: see rnnkit.train.classify and rnnkit.models.classifier).
    """
    from rnnkit.train import classify

    with _clean_errors():
        args = list(ctx.args)
        for flag, value in (("--data.train", train), ("--data.valid", valid)):
            if value is not None:
                args += [flag, str(value)]
        run = classify.train(classify.configure(config, tuple(args)))
        typer.echo(run.report.text())
        typer.echo(f"\nrun directory: {run.out_dir} (report.txt, confusion.png, best/, last/)")


@app.command("predict")
def predict_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory (uses best/) or checkpoint.")],
    text: Annotated[
        str | None, typer.Argument(help="A sentence (omit to read --file or stdin).")
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", help="One sentence per line.")] = None,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per sentence."),
) -> None:
    """Label sentences with a trained classifier, with the probability of each label."""
    from rnnkit.data.text import read_text
    from rnnkit.train import classify

    with _clean_errors():
        if text is not None:
            texts = [text]
        elif file is not None:
            texts = [line for line in read_text(file).splitlines() if line.strip()]
        else:
            texts = [line for line in sys.stdin.read().splitlines() if line.strip()]
        if not texts:
            raise ValueError("no sentences to label: give TEXT, --file, or lines on stdin")
        typer.echo(classify.format_predictions(classify.predict(checkpoint, texts), as_json))
