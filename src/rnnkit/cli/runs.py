"""`rnnkit eval` and `rnnkit predict`: the verbs on a trained run whose task is read from
the run's saved config (``meta.task``), so one command serves every task."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rnnkit.cli import app
from rnnkit.cli.errors import boundary

TASKS = ("lm", "classify", "tag", "seq2seq", "music", "forecast")
ENCODED = ("lm", "classify", "tag", "seq2seq")
"""The tasks whose files may be in another encoding than the run's (``--encoding``)."""


def run_task(checkpoint: Path) -> str:
    """The task of a run or checkpoint directory, from its config.json."""
    from rnnkit.train import checkpoint as ckpt

    task = ckpt.read_json(ckpt.resolve(checkpoint), ckpt.CONFIG_FILE).get("meta", {}).get("task")
    if task not in TASKS:
        raise ValueError(f"{checkpoint} holds a {task!r} model; rnnkit knows {', '.join(TASKS)}")
    return str(task)


def _lines(figures: dict[str, Any], prefix: str = "") -> list[str]:
    """``name value`` lines; nested tables as ``table.name value``."""
    out = []
    for name, value in figures.items():
        if isinstance(value, dict):
            out += _lines(value, f"{prefix}{name}.")
        elif isinstance(value, float):
            out.append(f"{prefix}{name} {value:.4f}")
        elif isinstance(value, int) and not isinstance(value, bool):
            out.append(f"{prefix}{name} {value:,}")
        else:
            out.append(f"{prefix}{name} {value}")
    return out


def _lm_text(path: Path, figures: dict[str, Any]) -> str:
    unit = figures["unit"]
    return (
        f"{path}: {int(figures['tokens']):,} {figures['tokenizer']} tokens\n"
        f"loss {figures['loss']:.4f} nats per {unit}\n"
        f"perplexity {figures['perplexity']:.3f}\n"
        f"bits per {unit} {figures['bits_per_token']:.4f}"
        + (
            f"\nnote: {figures['unk_fraction']:.2%} of the tokens are <unk>"
            if figures["unk_fraction"] > 0
            else ""
        )
    )


@app.command("eval")
def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory (uses best/) or checkpoint.")],
    file: Annotated[
        Path | None,
        typer.Argument(
            help="The labelled file: text (lm), labelled sentences (classify), CoNLL (tag), "
            "source<TAB>target (seq2seq), chorales JSON (music), CSV series (forecast)."
        ),
    ] = None,
    text: Annotated[
        Path | None, typer.Option("--text", help="Language models: the text file (= FILE).")
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option("--encoding", help="The file's encoding (default: the run's data.encoding)."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="Language models: parallel streams (default: run's)."),
    ] = None,
    bptt: Annotated[
        int | None,
        typer.Option("--bptt", help="Language models: steps per window (default: the run's)."),
    ] = None,
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Score a trained model of any task on a labelled file and print the task's metrics.

    lm: loss, perplexity, bits per token. classify: accuracy, macro F1, per-class P/R/F1.
    tag: span precision, recall, F1 (conlleval). seq2seq: exact match, BLEU, chrF.
    music: NLL per step. forecast: MAE, RMSE, MASE against the series.
    """
    import importlib
    import json

    from rnnkit.common.config import check_range

    with boundary("--encoding"):
        check_range("--batch-size", batch_size, min=1)
        check_range("--bptt", bptt, min=1)
        if file is not None and text is not None and file != text:
            raise ValueError("give the file once: FILE or --text FILE")
        path = file or text
        if path is None:
            raise ValueError("eval needs a file to score: rnnkit eval RUN FILE")
        task = run_task(checkpoint)
        lm_only = {"--batch-size": batch_size, "--bptt": bptt}
        if task == "lm":
            from rnnkit.tasks.lm import api as lm

            figures = lm.evaluate_file(checkpoint, path, encoding, batch_size, bptt)
        else:
            given = [flag for flag, value in lm_only.items() if value is not None]
            if given or text is not None:
                raise ValueError(
                    f"{', '.join(given or ['--text'])} is for language models; "
                    f"{checkpoint} holds a {task} model (rnnkit eval RUN FILE)"
                )
            if encoding is not None and task not in ENCODED:
                raise ValueError(f"--encoding: a {task} model's files are UTF-8")
            api = importlib.import_module(f"rnnkit.tasks.{task}.api")
            options = {"encoding": encoding} if task in ENCODED else {}
            figures = api.evaluate_file(checkpoint, path, **options)
        if as_json:
            typer.echo(json.dumps(figures))
        elif task == "lm":
            typer.echo(_lm_text(path, figures))
        else:
            typer.echo(f"{path} ({task}):\n" + "\n".join(_lines(figures)))


@app.command("predict")
def predict_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory (uses best/) or checkpoint.")],
    text: Annotated[str | None, typer.Argument(help="A sentence (else --file or stdin).")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="One sentence per line.")] = None,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per sentence."),
) -> None:
    """Label sentences with a trained classifier or tagger.

    A classifier prints each label with its probability; a tagger prints CoNLL columns
    (token tag), or JSON spans with --json. A tagger's sentences are split on whitespace.
    """
    from rnnkit.data.text import read_text

    with boundary():
        if text is not None:
            texts = [text]
        elif file is not None:
            texts = [line for line in read_text(file).splitlines() if line.strip()]
        else:
            texts = [line for line in sys.stdin.read().splitlines() if line.strip()]
        if not texts:
            raise ValueError("no sentences to label: give TEXT, --file, or lines on stdin")
        task = run_task(checkpoint)
        if task == "tag":
            from rnnkit.tasks.tag import api as tag

            tagged = tag.predict(checkpoint, [t.split() for t in texts])
            typer.echo(tag.format_tagged(tagged, as_json))
        elif task == "classify":
            from rnnkit.tasks.classify import api as classify

            typer.echo(classify.format_predictions(classify.predict(checkpoint, texts), as_json))
        else:
            verb = {"lm": "sample", "seq2seq": "translate", "music": "generate music"}
            raise ValueError(
                f"{checkpoint} holds a {task!r} model; predict needs a classifier or a tagger"
                + (f" (try rnnkit {verb[task]})" if task in verb else " (try rnnkit forecast)")
            )
