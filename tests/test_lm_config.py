"""Typed configs: overrides, files, round trips and precise errors."""

from __future__ import annotations

import json

import pytest

from rnnkit.common import config as cfg
from rnnkit.tasks.lm import api as lm


def test_overrides_file_and_cli_in_order(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nhidden_size = 64\ncell = "gru"\n[optim]\nlr = 0.5\n')
    sections = lm.configure(
        path,
        (
            "--model.hidden_size",
            "32",
            "--trainer.max_steps=5",
            "--model.tie_weights",
            "--model.embedding_size",
            "32",
            "--data.vocab_size",
            "none",
        ),
    )
    assert sections.model.hidden_size == 32  # the command line beats the file
    assert sections.model.cell == "gru" and sections.optim.lr == 0.5
    assert sections.trainer.max_steps == 5 and sections.model.tie_weights is True
    assert sections.data.vocab_size is None


def test_round_trip_through_json(tmp_path):
    sections = lm.configure(overrides=("--model.dropout", "0.25", "--sample.prime", "def "))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict(sections)))
    assert cfg.from_dict(lm.defaults(), json.loads(path.read_text())) == sections
    assert lm.configure(path) == sections


@pytest.mark.parametrize(
    "args, message",
    [
        (("--model.hidden", "3"), r"model has no field 'hidden'; the fields are: cell"),
        (("--modle.cell", "gru"), r"unknown section 'modle'; the sections are: model, data"),
        (("--model.hidden_size", "big"), r"model.hidden_size must be int, got 'big'"),
        (("--model.cell", "lstn"), r"model.cell must be one of rnn_tanh, .*; got 'lstn'"),
        (("--model.num_layers", "0"), r"model.num_layers must be >= 1, got 0"),
        (("--model.dropout", "nan"), r"model.dropout must be float"),
        (("--model.hidden_size", "none"), r"model.hidden_size cannot be none"),
        (("--data.batch_size", "2.5"), r"batch_size must be int, got '2.5'"),
        (("hidden_size",), r"unexpected argument 'hidden_size'"),
    ],
)
def test_bad_overrides_name_the_field(args, message):
    with pytest.raises(cfg.ConfigError, match=message):
        lm.configure(overrides=args)


def test_bad_config_files(tmp_path):
    with pytest.raises(cfg.ConfigError, match="does not exist"):
        lm.configure(tmp_path / "missing.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(cfg.ConfigError, match="is not valid"):
        lm.configure(bad)
    other = tmp_path / "run.yaml"
    other.write_text("a: 1")
    with pytest.raises(cfg.ConfigError, match=r"must end in .json or .toml"):
        lm.configure(other)


def test_help_table_lists_every_field_with_its_default():
    table = lm.options_help()
    for section, config in cfg.sections_of(lm.defaults()).items():
        for name in vars(config):
            assert f"--{section}.{name} " in table
    assert "--model.hidden_size 256  (int, >= 1)" in table
    assert "--trainer.max_steps none  (int|none, >= 1)" in table
    assert "--model.dropout 0.0  (float, in [0, 1))" in table


def test_a_checkpoint_config_is_a_valid_config_file(tmp_path):
    sections = lm.configure(overrides=("--model.cell", "rnn_relu"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg.to_dict(sections) | {"meta": {"task": "lm"}}))
    assert lm.configure(path).model.cell == "rnn_relu"


def test_python_keyword_sections():
    sections = lm.configure(text="my.txt", model={"hidden_size": 512}, trainer={"epochs": 5})
    assert sections.data.text == "my.txt" and sections.model.hidden_size == 512
    assert sections.trainer.epochs == 5
    with pytest.raises(cfg.ConfigError, match=r"configure\(\): model has no field 'hiden'"):
        lm.configure(model={"hiden": 1})
