"""Every `--help` is built without importing torch, every `train <task> --help` lists every
config field with its default, and the torch-free copies of names agree with their sources."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.common import config as cfg

TASKS = ("lm", "classify", "tag", "seq2seq", "music", "forecast")

_EVERY_HELP = """
import json, sys
import click, typer
from rnnkit.cli import app, register
register()
command = typer.main.get_command(app)
seen = []
def walk(cmd, path):
    ctx = click.Context(cmd, info_name=" ".join(path))
    cmd.get_help(ctx)
    seen.append(" ".join(path))
    for name, sub in getattr(cmd, "commands", {}).items():
        walk(sub, path + [name])
walk(command, ["rnnkit"])
print(json.dumps({"torch": "torch" in sys.modules, "helps": seen}))
"""


def test_every_help_builds_without_torch():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", _EVERY_HELP], capture_output=True, text=True, env=env, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])  # rich prints each help
    assert result["torch"] is False
    helps = set(result["helps"])
    for task in TASKS:
        assert f"rnnkit train {task}" in helps
    for verb in (
        "eval",
        "predict",
        "sample",
        "translate",
        "forecast",
        "generate music",
        "bench",
        "export",
    ):
        assert f"rnnkit {verb}" in helps


@pytest.mark.parametrize("task", TASKS)
def test_train_help_lists_every_field_with_its_default(task):
    result = CliRunner().invoke(app, ["train", task, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    settings = importlib.import_module(f"rnnkit.tasks.{task}.config").defaults()
    for section, config in cfg.sections_of(settings).items():
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            shown = "none" if value is None else repr(value) if value == "" else value
            assert f"--{section}.{f.name} {shown} " in result.output, (section, f.name)


def test_torch_free_names_agree_with_their_sources():
    from rnnkit.cli import bench
    from rnnkit.common.names import CELL_NAMES, TOKENIZER_KINDS
    from rnnkit.data.tokenizers import KINDS
    from rnnkit.nn.cells import CELLS
    from rnnkit.tools.bench import BenchConfig

    assert CELL_NAMES == tuple(CELLS) and TOKENIZER_KINDS == KINDS
    d = BenchConfig()
    written = (bench.DEFAULT_REPEATS, bench.DEFAULT_WARMUP, bench.DEFAULT_DTYPE)
    assert written == (d.repeats, d.warmup, d.dtype) and bench.DEFAULT_MEMORY == d.memory


def test_saved_settings_keep_the_on_disk_format():
    """config.json is {section: {field: value}}, as before the settings dataclasses."""
    from rnnkit.tasks.lm import config

    saved = cfg.to_dict(config.defaults())
    assert list(saved) == ["model", "data", "optim", "trainer", "sample"]
    assert saved["model"]["cell"] == "gru" and saved["trainer"]["max_minutes"] == 2.5
    assert cfg.from_dict(config.defaults(), saved | {"meta": {"task": "lm"}}) == config.defaults()
