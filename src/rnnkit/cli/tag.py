"""`rnnkit train tag`: sequence taggers from the shell (`rnnkit predict RUN` and
`rnnkit eval RUN FILE` use one, see ``rnnkit.cli.runs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli import TRAIN_SETTINGS, overrides_epilog, train_app, with_files
from rnnkit.cli.errors import boundary
from rnnkit.tasks.tag import config


@train_app.command(
    "tag", context_settings=TRAIN_SETTINGS, epilog=overrides_epilog(config.defaults())
)
def train_tag(
    ctx: typer.Context,
    train: Annotated[Path | None, typer.Option("--train", help="CoNLL training file.")] = None,
    valid: Annotated[Path | None, typer.Option("--valid", help="CoNLL validation file.")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="JSON or TOML config.")
    ] = None,
) -> None:
    """Train a sequence tagger (characters + words -> BiRNN -> CRF or softmax)."""
    from rnnkit.tasks.tag import api as tag

    with boundary("--data.encoding"):
        args = with_files(ctx.args, train=train, valid=valid)
        run = tag.train(tag.configure(config_file, tuple(args)))
        typer.echo(run.scores.report())
        typer.echo(
            f"\nrun directory: {run.out_dir} (report.txt, valid.conll, best/, last/)\n"
            f"score a file:  rnnkit eval {run.out_dir} test.conll"
        )
