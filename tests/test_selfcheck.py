"""`rnnkit selfcheck` end to end: every implementation agrees with the reference."""

from __future__ import annotations

from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.nn.cells import CELLS
from rnnkit.tools.selfcheck import TOLERANCE, compare_cell


def test_every_cell_agrees_with_the_reference():
    for cell in CELLS.values():
        errors = compare_cell(cell, seed=1)
        assert "composite forward" in errors
        assert ("torch.nn forward" in errors) == (cell.torch_mode is not None)
        assert max(errors.values()) <= TOLERANCE, (cell.name, errors)


def test_cli_selfcheck():
    result = CliRunner().invoke(app, ["selfcheck", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "all implementations agree" in result.output
    assert "gru_reset_before" in result.output
