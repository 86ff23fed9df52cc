"""`rnnkit train seq2seq` and `rnnkit translate`: encoder-decoders from the shell
(`rnnkit eval RUN FILE` scores one, see ``rnnkit.cli.runs``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli import TRAIN_SETTINGS, app, overrides_epilog, train_app, with_files
from rnnkit.cli.errors import boundary
from rnnkit.tasks.seq2seq import config


@train_app.command(
    "seq2seq", context_settings=TRAIN_SETTINGS, epilog=overrides_epilog(config.defaults())
)
def train_seq2seq(
    ctx: typer.Context,
    train: Annotated[Path | None, typer.Option("--train", help="source<TAB>target file.")] = None,
    valid: Annotated[Path | None, typer.Option("--valid", help="Validation pairs.")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="JSON or TOML config.")
    ] = None,
) -> None:
    """Train an encoder-decoder with attention (a BiRNN encoder, an attentive decoder).

    Data: --data.train FILE (source<TAB>target lines; with --data.train_target FILE, two
    aligned files) and --data.valid FILE, or --data.dates N for the generated dates task
    (N training pairs, 1,000 validation, 10,000 held-out test).
    """
    from rnnkit.tasks.seq2seq import api as seq2seq

    with boundary("--data.encoding"):
        args = with_files(ctx.args, train=train, valid=valid)
        run = seq2seq.train(seq2seq.configure(config_file, tuple(args)))
        r = run.result
        typer.echo(
            f"trained {r.step} steps in {r.seconds:.0f} s ({r.stopped}); best validation "
            f"loss {r.best_valid_loss:.4f} nats/token"
        )
        typer.echo(run.text())
        typer.echo(
            f"\nrun directory: {run.out_dir} (report.txt, attention.png, best/, last/)\n"
            f"translate:     rnnkit translate {run.out_dir} 'text' --beam 5"
        )


@app.command("translate")
def translate_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory (uses best/) or checkpoint.")],
    text: Annotated[str | None, typer.Argument(help="A text (else --file or stdin).")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="One text per line.")] = None,
    beam: Annotated[int | None, typer.Option("--beam", help="Beam width (1: greedy).")] = None,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per text."),
    attention: Annotated[
        Path | None, typer.Option("--attention", help="Write attention heat maps to this PNG.")
    ] = None,
    force: bool = typer.Option(False, "--force", help="Replace an existing --attention file."),
) -> None:
    """Translate texts with a trained encoder-decoder: one output line per non-blank input
    line (--json: source, translation, log-probability score, finished)."""
    from rnnkit.common.io import check_new_file
    from rnnkit.data.text import read_text
    from rnnkit.tasks.seq2seq import api as seq2seq

    with boundary():
        if beam is not None and beam < 1:
            raise ValueError(f"--beam must be >= 1, got {beam}")
        if attention is not None:
            check_new_file(attention, "--attention", force)
        if text is not None:
            texts = [text]
        elif file is not None:
            texts = [line.strip() for line in read_text(file).splitlines() if line.strip()]
        else:
            texts = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
        if not texts:
            raise ValueError("nothing to translate: give TEXT, --file, or lines on stdin")
        translator = seq2seq.load(checkpoint)
        results = translator.translate(texts, beam)
        for r in results:
            typer.echo(json.dumps(r, ensure_ascii=False) if as_json else r["translation"])
        if attention is not None:
            seq2seq.plot_attention(translator, texts[:6], attention)
