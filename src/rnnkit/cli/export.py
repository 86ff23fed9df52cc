"""`rnnkit export RUN --format onnx --out FILE`: a trained model of any task as a file
that runs outside rnnkit (the task is read from the run, as `rnnkit eval` does);
`--format pretrained --out DIR`: a save_pretrained folder (weights, config and the task's
files, no training state) that `from_pretrained` and every rnnkit verb read."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli import app
from rnnkit.cli.errors import boundary
from rnnkit.cli.runs import run_task

FORMATS = ("onnx", "pretrained")
"""What ``--format`` may name."""

WHAT = {
    "lm": "a step model (ids, state -> logits, state)",
    "classify": "the classifier (ids, lengths -> logits)",
    "tag": "the tagger's emissions (and the CRF's scores)",
    "forecast": "the forecaster over raw values",
    "music": "a step model (frame, state -> logits, state)",
    "seq2seq": "the encoder, and the decoder as a step model",
}
PARTS = {"seq2seq": ("encoder", "decoder")}
"""Tasks exported as several graphs: --out NAME.onnx writes NAME.<part>.onnx for each."""


@app.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory (uses best/) or checkpoint.")],
    out: Annotated[
        Path,
        typer.Option("--out", help="The file to write, e.g. model.onnx (a folder for pretrained)."),
    ],
    format: Annotated[
        str, typer.Option("--format", help=f"The file format: {', '.join(FORMATS)}.")
    ] = "onnx",
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace --out if it exists (for pretrained, only a folder save_pretrained wrote).",
    ),
) -> None:
    """Export a trained model to run outside rnnkit (ONNX Runtime and others).

    lm, music: a step model (token or frame and state in, logits and state out).
    classify: ids and lengths to class logits.
    tag: emissions, and the CRF's transition, start and end scores.
    forecast: raw past values to the forecast.
    seq2seq: NAME.encoder.onnx and NAME.decoder.onnx (a step model) for --out NAME.onnx.
    --format pretrained: a folder (model.safetensors, config.json, the tokenizer...)
    for Model.from_pretrained and rnnkit.load_pretrained.
    Inputs, outputs and a generation loop in ONNX Runtime: docs/export.md.
    """
    from rnnkit.common.io import check_new_file

    with boundary():
        if format not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
        if format == "pretrained":
            from rnnkit.tasks.hub import export_pretrained

            path = export_pretrained(checkpoint, out, force=force)  # out checked first
            typer.echo(f"wrote {path} (pretrained folder: {run_task(path)} model)")
            return
        task = run_task(checkpoint)
        parts = PARTS.get(task)
        targets = {None: out} if parts is None else {p: _part(out, p) for p in parts}
        for target in targets.values():  # every file checked before any work
            check_new_file(target, "--out", force)
        try:
            adapter = importlib.import_module(f"rnnkit.tasks.{task}.export")
        except ModuleNotFoundError as error:
            if error.name != f"rnnkit.tasks.{task}.export":
                raise
            raise ValueError(
                f"{checkpoint} holds a {task} model, which rnnkit cannot export yet"
            ) from None
        from rnnkit.export.onnx import require_onnx, signature, to_onnx

        onnx = require_onnx()  # a missing package is named before the model loads
        exportable = adapter.from_run(checkpoint)
        modules = {None: exportable} if parts is None else exportable
        typer.echo(f"{checkpoint} ({task}): {WHAT[task]}")
        for part, target in targets.items():
            path = to_onnx(modules[part], None, target, force=force)
            model = onnx.load(str(path), load_external_data=False)
            opset = model.opset_import[0].version
            typer.echo(f"wrote {path}" + (f" ({part})" if part else "") + f", ONNX opset {opset}")
            typer.echo(signature(model))


def _part(out: Path, part: str) -> Path:
    """NAME.onnx -> NAME.<part>.onnx."""
    return out.with_name(f"{out.stem}.{part}{out.suffix}")
