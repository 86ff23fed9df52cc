"""`rnnkit selfcheck`: run every cell through its three implementations and compare."""

from __future__ import annotations

import typer

from rnnkit.cli import app


@app.command()
def selfcheck(
    seed: int = typer.Option(0, help="Random seed for weights and inputs."),
) -> None:
    """Check every cell's implementations against the NumPy reference (float64).

    The composite path, any fused kernel, and torch.nn where it has the cell, forward
    and backward, on one random problem per cell.
    """
    from rnnkit.tools.selfcheck import run

    raise typer.Exit(0 if run(seed) else 1)
