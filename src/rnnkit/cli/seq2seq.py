"""`rnnkit train seq2seq` and `rnnkit translate`: encoder-decoders from the shell."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli import app
from rnnkit.cli.lm import _clean_errors, train_app


@train_app.command(
    "seq2seq",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="(see below)",
)
def train_seq2seq(
    ctx: typer.Context,
    train: Annotated[Path | None, typer.Option("--train", help="source<TAB>target file.")] = None,
    valid: Annotated[Path | None, typer.Option("--valid", help="Validation pairs.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="JSON or TOML config.")] = None,
) -> None:
    """Train an encoder-decoder with attention (a BiRNN encoder, an attentive decoder).

    Data: --data.train FILE (source<TAB>target lines; with --data.train_target FILE, two
    aligned files) and --data.valid FILE, or --data.dates N for the generated dates task
    (N training pairs, 1,000 validation, 10,000 held-out test). Overrides:
    --model.attention luong --model.cell lstm --model.sampling 0.25 --data.tokenizer word
    --decode.beam 5 --trainer.max_minutes 10 (every field: see rnnkit.tasks.seq2seq.api).
    """
    from rnnkit.tasks.seq2seq import api as seq2seq

    with _clean_errors():
        args = list(ctx.args)
        for flag, value in (("--data.train", train), ("--data.valid", valid)):
            if value is not None:
                args += [flag, str(value)]
        run = seq2seq.train(seq2seq.configure(config, tuple(args)))
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
) -> None:
    """Translate texts with a trained encoder-decoder: one output line per non-blank input
    line (--json: source, translation, log-probability score, finished)."""
    from rnnkit.data.text import read_text
    from rnnkit.tasks.seq2seq import api as seq2seq

    with _clean_errors():
        if beam is not None and beam < 1:
            raise ValueError(f"--beam must be >= 1, got {beam}")
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


def _patch_epilog() -> None:
    # The overrides table comes from the config dataclasses, so it never goes stale.
    from rnnkit.tasks.seq2seq import api as seq2seq

    for command in train_app.registered_commands:
        if command.name == "seq2seq":
            command.epilog = (
                "Config overrides (--section.field VALUE):\n\n" + seq2seq.options_help()
            )


_patch_epilog()
