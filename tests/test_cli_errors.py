"""The one error boundary: bad input is one line and exit 2, a bug is one line and exit 1
(or, with RNNKIT_RAISE_BUGS as in the tests, the exception itself), --debug shows the
traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from rnnkit.cli import app, errors

probe = typer.Typer()


@probe.command()
def fail(kind: str) -> None:
    with errors.boundary():
        if kind == "value":
            raise ValueError("data.train is required:\n  a labelled file")
        if kind == "key":
            raise KeyError("no such column 'x'")
        if kind == "missing":
            open("/nonexistent/file")
        raise TypeError("unsupported operand")


@pytest.mark.parametrize(
    "kind, line",
    [
        ("value", "error: data.train is required: a labelled file"),
        ("key", "error: no such column 'x'"),
        ("missing", "error: [Errno 2] No such file or directory: '/nonexistent/file'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(kind, line):
    result = CliRunner().invoke(probe, [kind])
    assert result.exit_code == 2 and result.output == line + "\n"


def test_a_bug_is_one_line_without_the_test_switch(monkeypatch):
    monkeypatch.delenv("RNNKIT_RAISE_BUGS", raising=False)
    result = CliRunner().invoke(probe, ["bug"])
    assert result.exit_code == 1
    assert result.output.startswith("error: internal error (TypeError: unsupported operand)")
    assert "--debug" in result.output and "Traceback" not in result.output


def test_a_bug_propagates_in_the_tests():
    result = CliRunner().invoke(probe, ["bug"])
    assert isinstance(result.exception, TypeError)


def test_debug_flag_shows_the_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("RNNKIT_RAISE_BUGS", None)
    missing = str(tmp_path / "missing")
    plain = subprocess.run(
        [sys.executable, "-m", "rnnkit", "predict", missing, "hello"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1 and "does not exist" in plain.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "rnnkit", "--debug", "predict", missing, "hello"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_the_debug_flag_is_reset_per_invocation():
    runner = CliRunner()
    runner.invoke(app, ["--debug", "train", "--help"])
    runner.invoke(app, ["train", "--help"])
    assert errors._debug() is (os.environ.get("RNNKIT_DEBUG", "") not in ("", "0"))
