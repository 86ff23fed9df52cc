"""`rnnkit <command>`: a thin layer over the Python API, one module per task.

Each task's module (``lm``, ``classify``, ``tag``, ``seq2seq``, ``music``, ``forecast``)
adds its ``train <task>`` command and its own verbs; ``runs`` holds the verbs that read
the task from a trained run (``eval``, ``predict``), ``export`` the one that writes it
out of rnnkit (``export``); ``errors`` is the one error
boundary. Nothing here imports torch until a command runs, so every ``--help`` is fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from rnnkit.cli import errors

app = typer.Typer(
    name="rnnkit",
    help="Recurrent neural networks: train, sample, evaluate, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

train_app = typer.Typer(
    help="Train a model (one subcommand per task).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(train_app, name="train")

generate_app = typer.Typer(help="Generate from a trained model.", no_args_is_help=True)
app.add_typer(generate_app, name="generate")

TRAIN_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}
"""A ``train <task>`` command takes every ``--section.field VALUE`` override."""


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help="Show an error's full traceback (also: RNNKIT_DEBUG=1)."
    ),
) -> None:
    """Recurrent neural networks: train, sample, evaluate, benchmark."""
    errors.set_debug(debug)
    errors.show_notices()


def overrides_epilog(defaults: Any) -> str:
    """Every config field with its default, from the task's settings dataclass."""
    from rnnkit.common.config import help_table

    return (
        "Config overrides (--section.field VALUE or --section.field=VALUE; "
        "none for an empty optional):\n\n" + help_table(defaults)
    )


def with_files(args: Sequence[str], **fields: Path | str | None) -> list[str]:
    """``args`` plus ``--data.<field> VALUE`` for each given shortcut flag's value."""
    out = list(args)
    for name, value in fields.items():
        if value is not None:
            out += [f"--data.{name}", str(value)]
    return out


COMMAND_MODULES = (
    "lm",
    "classify",
    "tag",
    "seq2seq",
    "music",
    "forecast",
    "runs",
    "export",
    "viz",
    "bench",
    "diagnose",
    "experiment",
    "selfcheck",
)


def register() -> None:
    """Import every command module: each adds its commands to ``app`` on import."""
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(f"rnnkit.cli.{name}")


def main() -> None:
    register()
    if os.environ.get("TORCHELASTIC_RUN_ID") is None:
        app()
        return
    # Started by torchrun: only rank 0 speaks on stdout (progress, results, samples); an
    # error from any rank reaches stderr as its one line (``errors.boundary``), and torch's
    # @record hands a crash's traceback to torchrun, which stops the other ranks.
    from torch.distributed.elastic.multiprocessing.errors import record

    if os.environ.get("RANK", "0") != "0":
        sys.stdout = open(os.devnull, "w")  # for the life of the process
    record(app)()
