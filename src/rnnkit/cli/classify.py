"""`rnnkit train classify`: sentence classifiers from the shell (`rnnkit predict RUN` and
`rnnkit eval RUN FILE` use one, see ``rnnkit.cli.runs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli import TRAIN_SETTINGS, overrides_epilog, train_app, with_files
from rnnkit.cli.errors import boundary
from rnnkit.tasks.classify import config


@train_app.command(
    "classify", context_settings=TRAIN_SETTINGS, epilog=overrides_epilog(config.defaults())
)
def train_classify(
    ctx: typer.Context,
    train: Annotated[Path | None, typer.Option("--train", help="Labelled training file.")] = None,
    valid: Annotated[Path | None, typer.Option("--valid", help="Validation file.")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="JSON or TOML config.")
    ] = None,
) -> None:
    """Train a sentence classifier (embedding -> BiRNN -> pooling -> softmax).

    Files: `label<space>text` lines (SST), CSV/TSV with a header, or JSONL.
    """
    from rnnkit.tasks.classify import api as classify

    with boundary("--data.encoding"):
        args = with_files(ctx.args, train=train, valid=valid)
        run = classify.train(classify.configure(config_file, tuple(args)))
        typer.echo(run.report.text())
        typer.echo(
            f"\nrun directory: {run.out_dir} (report.txt, confusion.png, best/, last/)\n"
            f"score a file:  rnnkit eval {run.out_dir} test.txt"
        )
