"""`rnnkit <command>`: a thin layer over the Python API, one module per command group.

Each command module defines its commands on ``app`` (or a sub-app added here); the CLI
holds no logic that the Python API lacks.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="rnnkit",
    help="Recurrent neural networks: train, sample, evaluate, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Recurrent neural networks: train, sample, evaluate, benchmark."""


def main() -> None:
    # Command modules register themselves on import; keep them lazy so `--help` is fast.
    from rnnkit.cli import (  # noqa: F401
        bench,
        classify,
        diagnose,
        experiment,
        generate,
        lm,
        predict,
        selfcheck,
        seq2seq,
    )

    app()
