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
    """Label sentences: a classifier prints each label with its probability; a tagger
    prints CoNLL columns (token tag), or JSON spans with --json. A tagger's sentences are
    split on whitespace."""
    from rnnkit.data.text import read_text
    from rnnkit.train import checkpoint as ckpt
    from rnnkit.train import classify, tag

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
            raise ValueError(f"{checkpoint} holds a {meta.get('task')!r} model; "
                             "predict needs a classifier or a tagger")  # fmt: skip
