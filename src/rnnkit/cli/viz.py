"""`rnnkit viz RUN --text FILE --out viz.html`: a trained language model's units on a
text, as one self-contained page (and its data as JSON); rnnkit.tasks.lm.viz."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli import app
from rnnkit.cli.errors import boundary


@app.command("viz")
def viz_command(
    run: Annotated[Path, typer.Argument(help="A language-model run (uses best/) or checkpoint.")],
    text: Annotated[
        Path, typer.Option("--text", help="The text file to read (UTF-8 unless --encoding).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="The file to write: the page (viz.html), or the JSON with --format json."
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the page's data as JSON to this file.")
    ] = None,
    format: Annotated[
        str, typer.Option("--format", help="What --out holds: html or json.")
    ] = "html",
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Show the text's first this many tokens.")
    ] = 2000,
    max_megabytes: Annotated[
        float,
        typer.Option("--max-megabytes", help="Refuse data whose uint8 codes exceed this (MB)."),
    ] = 32.0,
    strict: Annotated[
        bool, typer.Option("--strict", help="A text over --max-tokens is an error instead of cut.")
    ] = False,
    layer: Annotated[int, typer.Option("--layer", help="The layer the page shows first.")] = 0,
    signal: Annotated[
        str,
        typer.Option(
            "--signal",
            help="The signal shown first: h, c (LSTM), or a gate (i, f, g, o; r, z, n; ...).",
        ),
    ] = "h",
    unit: Annotated[int, typer.Option("--unit", help="The unit shown first.")] = 0,
    pattern: Annotated[
        str, typer.Option("--pattern", help="A JavaScript regular expression the page starts with.")
    ] = "",
    rank_by: Annotated[
        str,
        typer.Option("--rank-by", help="The ranking shown first: variance, saturation or pattern."),
    ] = "variance",
    encoding: Annotated[
        str, typer.Option("--encoding", help="The text file's encoding.")
    ] = "utf-8",
    force: bool = typer.Option(False, "--force", help="Replace --out / --json if they exist."),
) -> None:
    """Colour a text by a unit's activation, rank units, show the next-token guesses.

    One HTML file (inline script and styles, no network): pick a layer, a signal (h, c,
    the gates) and a unit; rank units by variance, saturation or correlation with a
    regular expression typed in the page; hover a token for the model's top 5 next
    tokens, the true next token's probability and the loss. docs/viz.md.
    """
    with boundary("--encoding"):
        from rnnkit.common.io import check_new_file
        from rnnkit.data.text import read_text
        from rnnkit.tasks.lm import viz

        if format not in viz.FORMATS:
            raise ValueError(f"--format must be one of {', '.join(viz.FORMATS)}, got {format!r}")
        if out is None and json_out is None:
            raise ValueError("name a file to write: --out viz.html (or --json data.json)")
        named = [(out, format, "--out"), (json_out, "json", "--json")]
        targets = [(path, fmt, flag) for path, fmt, flag in named if path is not None]
        for path, _, flag in targets:  # every output checked before any work
            check_new_file(path, flag, force)
        limits = viz.VizLimits(max_tokens, max_megabytes, strict)
        content = read_text(text, encoding)
        from rnnkit.cli.runs import run_task
        from rnnkit.tasks.lm.api import load

        task = run_task(run)
        if task != "lm":
            raise ValueError(f"{run} holds a {task} model; rnnkit viz reads language models (lm)")
        model, tokenizer, _ = load(run)
        data = viz.visualise(
            model,
            tokenizer,
            content,
            limits=limits,
            layer=layer,
            signal=signal,
            unit=unit,
            pattern=pattern,
            rank_by=rank_by,
            title=f"{run.name}: " + viz.default_title(model),
        )
        lim = data["limits"]
        if lim["cut"]:
            typer.echo(
                f"note: the text has {lim['text_tokens']} tokens; showing the first "
                f"{lim['shown_tokens']} (--max-tokens)"
            )
        for path, fmt, flag in targets:
            written = viz.write(data, path, fmt, force=force, flag=flag)
            typer.echo(f"wrote {written} ({fmt}, {lim['shown_tokens']} tokens)")
