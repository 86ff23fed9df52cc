"""`rnnkit train music` and `rnnkit generate music`: polyphonic music models from the
shell (`rnnkit eval RUN FILE` scores one, see ``rnnkit.cli.runs``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rnnkit.cli import TRAIN_SETTINGS, generate_app, overrides_epilog, train_app, with_files
from rnnkit.cli.errors import boundary
from rnnkit.tasks.music import config


@train_app.command(
    "music", context_settings=TRAIN_SETTINGS, epilog=overrides_epilog(config.defaults())
)
def train_music(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Option("--data", help="Chorales JSON file.")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="JSON or TOML config.")
    ] = None,
) -> None:
    """Train a polyphonic music model on piano rolls (Chung et al. 2014's setting)."""
    from rnnkit.tasks.music import api as music

    with boundary():
        args = with_files(ctx.args, path=data)
        run = music.train(music.configure(config_file, tuple(args)))
        typer.echo(
            f"{run.parameters:,} parameters; best checkpoint: train NLL "
            f"{run.train_nll:.3f}, valid NLL {run.valid_nll:.3f} per time step"
        )
        typer.echo(f"run directory: {run.out_dir}")


@generate_app.command("music")
def generate_music(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory (uses best/) or checkpoint.")],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for the MIDI and PNG files (a fresh numbered one if it holds files).",
        ),
    ] = Path("generated"),
    steps: int = typer.Option(64, "--steps", help="Steps (quarter notes) to generate."),
    num_samples: int = typer.Option(1, "--num-samples", "-n", help="Pieces to generate."),
    temperature: float = typer.Option(1.0, "--temperature", help="Divide logits by this."),
    primer: Annotated[
        Path | None, typer.Option("--primer", help="JSON list of steps (lists of pitches).")
    ] = None,
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    tempo: float = typer.Option(90.0, "--tempo", help="Beats per minute in the MIDI file."),
) -> None:
    """Sample chorales; write piece-N.mid and piece-N.png for each."""
    from rnnkit.common.config import check_range
    from rnnkit.tasks.music import api as music
    from rnnkit.tasks.music.data import chorale_of, read_primer, write_midi
    from rnnkit.train import run_folder

    with boundary():
        check_range("--steps", steps, min=1)
        check_range("--num-samples", num_samples, min=1)
        check_range("--temperature", temperature, gt=0)
        check_range("--seed", seed, min=0, max=2**32 - 1)
        # MIDI stores a tempo as microseconds per beat in 3 bytes: 3.58 bpm is the slowest
        check_range("--tempo", tempo, min=4, max=1000)
        prime = read_primer(primer) if primer is not None else None
        # A folder of its own (--out, else --out-2, ...): earlier pieces are never replaced.
        with run_folder.claim(out) as folder:
            model, rolls = music.generate_from(
                checkpoint,
                steps,
                prime,
                num_samples=num_samples,
                temperature=temperature,
                seed=seed,
            )
            low = model.config.low
            for n in range(num_samples):
                roll = rolls[:, n]
                midi = folder / f"piece-{n + 1}.mid"
                write_midi(chorale_of(roll, low), midi, tempo_bpm=tempo)
                music.plot_roll(roll, low, folder / f"piece-{n + 1}.png", f"sample {n + 1}")
                typer.echo(f"{midi}: {int(roll.sum())} notes over {steps} steps")
