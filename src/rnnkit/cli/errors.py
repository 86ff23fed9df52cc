"""The one error boundary: an error from the library ends the command with one line on
stderr and a non-zero exit status, not a traceback (as git and pip do).

    exit 2    bad input: a config, data, checkpoint or value the library refused
              (ConfigError, DataError, CheckpointError, TagError: all ValueErrors;
              KeyError; OSError such as a missing file; MissingExtra, an optional
              package not installed)
    exit 1    training diverged (TrainingDiverged), or an unexpected error: a bug,
              reported as "internal error" with its type
    exit 130  interrupted (Ctrl-C)

A command whose files' encoding can be chosen names its flag (``boundary("--data.encoding")``),
and a file that does not decode gets the hint with that flag.

``rnnkit --debug ...`` or ``RNNKIT_DEBUG=1`` shows the full traceback instead.
``RNNKIT_RAISE_BUGS=1`` (set by the test suite) lets unexpected errors propagate
while bad input still gets its one line, so a test sees a real bug as the exception it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import typer

_state = {"debug": False}


def set_debug(on: bool) -> None:
    _state["debug"] = on


def _debug() -> bool:
    return _state["debug"] or os.environ.get("RNNKIT_DEBUG", "") not in ("", "0")


def _raise_bugs() -> bool:
    return os.environ.get("RNNKIT_RAISE_BUGS", "") not in ("", "0")


def show_notices() -> None:
    """Print the library's notices (``rnnkit.common.notices``) as ``note: ...`` lines on
    stderr; other warnings keep Python's format."""
    import warnings

    from rnnkit.common.notices import Notice

    shown = warnings.showwarning
    if getattr(shown, "rnnkit_notices", False):
        return

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, Notice):
            typer.echo(f"note: {' '.join(str(message).split())}", err=True)
        else:
            shown(message, category, *args, **kwargs)

    show.rnnkit_notices = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's without the repr quotes)."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    return " ".join(str(message).split()) or type(error).__name__


def _diverged(error: BaseException) -> bool:
    trainer = sys.modules.get("rnnkit.train.trainer")  # loaded if anything trained
    return trainer is not None and isinstance(error, trainer.TrainingDiverged)


def _peer_failed(error: BaseException) -> bool:
    """Rank 0 failed where the others waited for it: rank 0 prints the error."""
    distributed = sys.modules.get("rnnkit.train.distributed")
    return distributed is not None and isinstance(error, distributed.PeerFailed)


def _missing_extra(error: BaseException) -> bool:
    """An optional package a command needs is not installed (the message says how)."""
    checks = sys.modules.get("rnnkit.common.checks")  # loaded by whatever raised it
    return checks is not None and isinstance(error, checks.MissingExtra)


def _rank_prefix() -> str:
    """'rank 1: ' in a process other than rank 0 of a torchrun job, else ''."""
    rank = os.environ.get("RANK", "0") if "TORCHELASTIC_RUN_ID" in os.environ else "0"
    return "" if rank == "0" else f"rank {rank}: "


def _hint(error: BaseException, encoding_flag: str | None) -> str:
    text = sys.modules.get("rnnkit.data.text")
    if encoding_flag and text is not None and isinstance(error, text.EncodingError):
        return f", e.g. {encoding_flag} latin-1"
    return ""


@contextmanager
def boundary(encoding_flag: str | None = None) -> Iterator[None]:
    """Run a command's body: errors become one line on stderr and an exit status.
    ``encoding_flag``: the command's flag for its files' encoding, named in the hint for
    a file that does not decode."""
    try:
        yield
    except (click.exceptions.Exit, click.Abort, click.ClickException, SystemExit):
        raise
    except KeyboardInterrupt:
        if _debug():
            raise
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as error:
        if _debug():
            raise
        if _peer_failed(error):
            raise typer.Exit(1) from None
        prefix = _rank_prefix()
        if _diverged(error):
            typer.echo(f"error: {prefix}{one_line(error)}", err=True)
            raise typer.Exit(1) from None
        if isinstance(error, ValueError | KeyError | OSError) or _missing_extra(error):
            typer.echo(f"error: {prefix}{one_line(error)}{_hint(error, encoding_flag)}", err=True)
            raise typer.Exit(2) from None
        if _raise_bugs():
            raise
        typer.echo(
            f"error: {prefix}internal error ({type(error).__name__}: {one_line(error)}); "
            "rerun with --debug for the traceback",
            err=True,
        )
        raise typer.Exit(1) from None
