"""save_pretrained / from_pretrained (rnnkit.train.pretrained) for every task model: a
saved folder loads back to the same tensors and the same outputs (checked against the
file read by safetensors itself and against the model before saving), a run's best/
exports as a folder every task API reads, and each refusal is one line naming its file,
with no network call."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import rnnkit
from rnnkit.cli import app
from rnnkit.common.io import UnsafePathError
from rnnkit.data.tokenizers import train_tokenizer
from rnnkit.tasks import classify, forecast, lm, music, seq2seq, tag
from rnnkit.tasks.classify.labelled import LabelSet
from rnnkit.tasks.classify.model import Classifier, ClassifierConfig
from rnnkit.tasks.forecast.model import Forecaster, ForecasterConfig
from rnnkit.tasks.forecast.series import Scaler
from rnnkit.tasks.hub import export_pretrained
from rnnkit.tasks.lm.model import LanguageModel, LMConfig
from rnnkit.tasks.music.model import MusicConfig, MusicModel
from rnnkit.tasks.seq2seq.api import PairTokenizers
from rnnkit.tasks.seq2seq.model import Seq2Seq, Seq2SeqConfig
from rnnkit.tasks.tag import allowed_transitions
from rnnkit.tasks.tag.api import TagVocabulary
from rnnkit.tasks.tag.config import TagDataConfig
from rnnkit.tasks.tag.model import Tagger, TaggerConfig
from rnnkit.train import pretrained
from rnnkit.train.checkpoint import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "the cat sat on the mat . the dog sat on the log .\n"


@dataclass
class Case:
    """A tiny task model, the parts save_pretrained needs, and its outputs on a batch."""

    model: Any
    parts: dict[str, Any]
    outputs: Callable[[Any], list[torch.Tensor]]


def _jitter(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter away from its initial value (the CRF's start at zero)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _lm() -> Case:
    tokenizer = train_tokenizer("char", [TEXT])
    config = LMConfig(cell="lstm", num_layers=2, hidden_size=8, embedding_size=8, tie_weights=True)
    model = _jitter(LanguageModel(config, tokenizer.vocab_size))
    ids = torch.randint(0, tokenizer.vocab_size, (7, 3))

    def outputs(m):
        logits, (h, c) = m(ids)
        return [logits, h, c]

    return Case(model, {"tokenizer": tokenizer}, outputs)


def _classify() -> Case:
    tokenizer = train_tokenizer("word", [TEXT])
    config = ClassifierConfig(cell="gru", hidden_size=6, embedding_size=5, pooling="attention")
    model = _jitter(Classifier(config, tokenizer.vocab_size, 3))
    ids = torch.randint(1, tokenizer.vocab_size, (4, 6))
    lengths = torch.tensor([6, 2, 5, 1])
    labels = LabelSet(("neg", "neutral", "pos"))
    return Case(
        model,
        {"tokenizer": tokenizer, "labels": labels, "lowercase": True},
        lambda m: [m(ids, lengths)],
    )


def _tag() -> Case:
    words = train_tokenizer("word", [TEXT])
    chars = train_tokenizer("char", [TEXT])
    tags = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    config = TaggerConfig(
        hidden_size=6, embedding_size=5, char_embedding_size=3, char_hidden_size=2
    )
    constraints = allowed_transitions(tags, "BIOES")
    model = _jitter(Tagger(config, words.vocab_size, chars.vocab_size, len(tags), constraints))
    vocabulary = TagVocabulary(words, chars, tags, TagDataConfig(lowercase=False))
    sentences = [["the", "cat", "sat"], ["a", "dog"]]
    batch = vocabulary.batch(sentences)

    def outputs(m):
        emissions = m.emissions(*batch)
        best = m.decode(*batch)
        return [emissions, torch.tensor([t for row in best for t in row])]

    return Case(model, {"vocabulary": vocabulary}, outputs)


def _seq2seq() -> Case:
    source = train_tokenizer("char", ["5 janvier 2023"])
    target = train_tokenizer("char", ["2023-01-05"])
    config = Seq2SeqConfig(
        cell="lstm", embedding_size=4, hidden_size=6, attention_size=5, dropout=0.0
    )
    model = _jitter(Seq2Seq(config, source.vocab_size, target.vocab_size))
    src = torch.randint(4, source.vocab_size, (2, 5))
    lengths = torch.tensor([5, 3])
    target_in = torch.randint(4, target.vocab_size, (2, 4))
    return Case(
        model,
        {"tokenizers": PairTokenizers(source, target)},
        lambda m: list(m(src, lengths, target_in)),
    )


def _music() -> Case:
    model = _jitter(MusicModel(MusicConfig(hidden_size=5, low=60, high=71)))
    rolls = (torch.rand(6, 2, 12) < 0.3).float()

    def outputs(m):
        logits, h = m(rolls)
        return [logits, h]

    return Case(model, {}, outputs)


def _forecast() -> Case:
    config = ForecasterConfig(hidden_size=5, window=6, horizon=3, gaussian=True)
    model = _jitter(Forecaster(config, 2))
    inputs = torch.randn(3, 6, 2)
    scaler = Scaler(np.array([1.5, -2.0]), np.array([0.5, 3.0]))
    return Case(
        model,
        {"scaler": scaler, "columns": ["a", "b"], "difference": True},
        lambda m: list(m(inputs)),
    )


CASES = {
    "lm": _lm,
    "classify": _classify,
    "tag": _tag,
    "seq2seq": _seq2seq,
    "music": _music,
    "forecast": _forecast,
}


def _same_state(a: torch.nn.Module, b: dict[str, torch.Tensor]) -> None:
    state = a.state_dict()
    assert sorted(state) == sorted(b)
    for name, tensor in state.items():
        assert tensor.dtype == b[name].dtype and torch.equal(tensor, b[name]), name


@pytest.mark.parametrize("task", CASES)
def test_a_saved_model_loads_back_with_the_same_tensors_and_outputs(task, tmp_path):
    case = CASES[task]()
    before = [t.detach().clone() for t in case.outputs(case.model)]
    out = case.model.save_pretrained(tmp_path / "saved", **case.parts)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.safetensors", "config.json", "checksums.json", *pretrained_files(out)]
    )
    loaded = type(case.model).from_pretrained(out)
    assert type(loaded) is type(case.model) and not loaded.training
    _same_state(loaded, case.model.state_dict())
    stored = load_file(out / "model.safetensors")  # safetensors itself, not our reader
    _same_state(case.model, stored | _tied(case.model, stored))
    with torch.no_grad():
        after = case.outputs(loaded)
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        assert torch.equal(a, b)
    meta = json.loads((out / "config.json").read_text())["meta"]
    assert meta["task"] == task and meta["format"] == pretrained.FORMAT
    assert meta["format_version"] == pretrained.FORMAT_VERSION
    # The generic entry finds the class from config.json; saving again needs no parts.
    again = rnnkit.load_pretrained(out)
    assert type(again) is type(case.model)
    again.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again/model.safetensors").read_bytes() == (
        out / "model.safetensors"
    ).read_bytes()
    for name in ("config.json", *pretrained_files(out)):
        assert json.loads((tmp_path / "again" / name).read_text()) == json.loads(
            (out / name).read_text()
        )


def pretrained_files(folder: Path) -> list[str]:
    return [
        p.name for p in folder.glob("*.json") if p.name not in ("config.json", "checksums.json")
    ]


def _tied(model: torch.nn.Module, stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tied tensors stored once, under their other names."""
    state = model.state_dict(keep_vars=True)
    return {
        name: stored[other]
        for name in state
        if name not in stored
        for other in stored
        if state[other] is state[name]
    }


def test_every_task_has_a_model_class():
    from rnnkit.cli.runs import TASKS
    from rnnkit.tasks.hub import MODELS, model_class

    assert tuple(MODELS) == TASKS == tuple(CASES)
    for task in TASKS:
        assert model_class(task).pretrained_adapter().task == task


def test_the_task_apis_read_a_pretrained_folder_with_its_parts(tmp_path):
    """What each task's ``load`` returns for a run, it returns for a pretrained folder."""
    case = _lm()
    case.model.save_pretrained(tmp_path / "lm", **case.parts)
    model, tokenizer, sections = lm.load(tmp_path / "lm")
    assert tokenizer.to_dict() == case.parts["tokenizer"].to_dict()
    assert sections.model == case.model.config and sections.data.tokenizer == "char"
    case = _classify()
    case.model.save_pretrained(tmp_path / "classify", **case.parts)
    model, tokenizer, labels = classify.load(tmp_path / "classify")
    assert labels == case.parts["labels"] and model.lowercase is True
    case = _tag()
    case.model.save_pretrained(tmp_path / "tag", **case.parts)
    _, vocabulary = tag.load(tmp_path / "tag")
    assert vocabulary.tags == case.parts["vocabulary"].tags and vocabulary.data.lowercase is False
    case = _seq2seq()
    case.model.save_pretrained(tmp_path / "seq2seq", **case.parts)
    translator = seq2seq.load(tmp_path / "seq2seq")
    assert translator.tokenizers.target.to_dict() == case.parts["tokenizers"].target.to_dict()
    assert isinstance(translator.translate(["5 janvier"])[0]["translation"], str)
    case = _music()
    case.model.save_pretrained(tmp_path / "music")
    assert music.load(tmp_path / "music").config == case.model.config
    case = _forecast()
    case.model.save_pretrained(tmp_path / "forecast", **case.parts)
    _, scaler, difference = forecast.load(tmp_path / "forecast")
    assert scaler.std.tolist() == [0.5, 3.0] and difference is True


# --- from a trained run ------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny language-model run with best/ and last/."""
    root = tmp_path_factory.mktemp("trained")
    (root / "tiny.txt").write_text(TEXT * 20, encoding="utf-8")
    overrides = (
        *("--data.text", str(root / "tiny.txt"), "--model.hidden_size", "8"),
        *("--model.num_layers", "1", "--model.embedding_size", "4", "--data.batch_size", "4"),
        *("--data.bptt", "10", "--trainer.epochs", "2", "--trainer.progress", "false"),
        *("--trainer.out", str(root / "run")),
    )
    return lm.train(lm.configure(overrides=overrides), log=str).out_dir


def test_a_run_exports_as_a_pretrained_folder(trained, tmp_path):
    out = export_pretrained(trained, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == [
        "checksums.json",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]  # no training state
    config = json.loads((out / "config.json").read_text())
    run_config = json.loads((trained / "best/config.json").read_text())
    assert "trainer" not in config and "optim" not in config
    assert config["model"] == run_config["model"] and config["data"] == run_config["data"]
    assert config["meta"]["vocab_size"] == run_config["meta"]["vocab_size"]
    assert (out / "tokenizer.json").read_text() == (trained / "best/tokenizer.json").read_text()
    run_model, tokenizer, _ = lm.load(trained)
    model = LanguageModel.from_pretrained(out)
    _same_state(model, run_model.state_dict())
    ids = torch.tensor(tokenizer.encode("the cat sat on"))[:, None]  # [T, 1]
    with torch.no_grad():
        assert torch.equal(model(ids)[0], run_model(ids)[0])
    # A run folder loads directly too (its best/), and the CLI reads the folder as a run.
    _same_state(LanguageModel.from_pretrained(trained), run_model.state_dict())
    text = trained.parent / "tiny.txt"
    assert lm.evaluate_file(out, text) == lm.evaluate_file(trained, text)
    result = CliRunner().invoke(app, ["eval", str(out), str(text)])
    assert result.exit_code == 0 and "perplexity" in result.output, result.output
    last = export_pretrained(trained, tmp_path / "last", which="last")
    last_model, _, _ = lm.load(trained, which="last")
    _same_state(LanguageModel.from_pretrained(last), last_model.state_dict())


def test_a_pretrained_folder_is_not_resumed(saved):
    with pytest.raises(CheckpointError) as error:
        lm.train(resume=saved)
    _one_line(error, str(saved), "nothing to resume")
    assert not (saved.parent / "run.lock").exists()  # refused before the folder was locked


def test_a_loaded_run_model_saves_without_parts(trained, tmp_path):
    model, tokenizer, _ = lm.load(trained)
    model.save_pretrained(tmp_path / "out")
    assert lm.load(tmp_path / "out")[1].to_dict() == tokenizer.to_dict()


# --- refusals ----------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path) -> Path:
    case = _lm()
    return case.model.save_pretrained(tmp_path / "saved", **case.parts)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network call")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _one_line(error: pytest.ExceptionInfo, *names: str) -> str:
    message = str(error.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message
    return message


@pytest.mark.parametrize("name", ["missing-folder", "someone/some-model"])
def test_a_missing_path_is_an_error_never_a_download(name, tmp_path, no_network):
    path = tmp_path / name if name == "missing-folder" else name
    for load in (LanguageModel.from_pretrained, rnnkit.load_pretrained):
        with pytest.raises(CheckpointError) as error:
            load(path)
        _one_line(error, str(path), "never downloads")


def test_an_existing_folder_is_replaced_only_with_force(saved, trained, tmp_path):
    case = _lm()
    with pytest.raises(FileExistsError) as error:
        case.model.save_pretrained(saved, **case.parts)
    _one_line(error, str(saved), "force")
    assert torch.equal(
        load_file(saved / "model.safetensors")["rnn.weight_hh_l0"],
        LanguageModel.from_pretrained(saved).rnn.weight_hh_l0,
    )
    case.model.save_pretrained(saved, force=True, **case.parts)
    _same_state(LanguageModel.from_pretrained(saved), case.model.state_dict())
    # force never replaces a folder it did not write: a run, or any other folder
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/todo.txt").write_text("keep me")
    for folder in (trained, tmp_path / "notes"):
        before = sorted(p.name for p in folder.iterdir())
        with pytest.raises(FileExistsError) as error:
            case.model.save_pretrained(folder, force=True, **case.parts)
        _one_line(error, str(folder), "did not write")
        assert sorted(p.name for p in folder.iterdir()) == before
    with pytest.raises(FileExistsError):
        export_pretrained(trained, trained / "best", force=True)
    # an empty folder is fine without force
    (tmp_path / "empty").mkdir()
    case.model.save_pretrained(tmp_path / "empty", **case.parts)


def test_links_and_files_are_refused_as_targets(saved, tmp_path):
    case = _lm()
    link = tmp_path / "link"
    os.symlink(saved, link)
    with pytest.raises(UnsafePathError) as error:
        case.model.save_pretrained(link, force=True, **case.parts)
    _one_line(error, str(link), "symbolic link")
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "nowhere", dangling)
    with pytest.raises(UnsafePathError):
        case.model.save_pretrained(dangling, **case.parts)
    assert not (tmp_path / "nowhere").exists()
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(FileExistsError) as error:
        case.model.save_pretrained(file, force=True, **case.parts)
    _one_line(error, str(file), "is a file")
    assert file.read_text() == "x"


def _truncate(folder: Path) -> None:
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-7])


def _flip_weight_byte(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # a byte of the last tensor's data: header and sizes intact
    path.write_bytes(bytes(data))


def _resize_in_config(folder: Path) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["model"]["cell"] = "gru"  # 3 gates where the weights have 4
    path.write_text(json.dumps(config))


def _config_not_json(folder: Path) -> None:
    (folder / "config.json").write_text('{"model": ')


def _tokenizer_garbage(folder: Path) -> None:
    (folder / "tokenizer.json").write_text('{"kind": "char"}')


def _newer_format(folder: Path) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["meta"]["format_version"] = pretrained.FORMAT_VERSION + 1
    config["model"]["a_future_field"] = 1  # refused by version, before its fields are read
    path.write_text(json.dumps(config))


def _weights_missing(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


DAMAGES = [
    (_truncate, "model.safetensors", "truncated"),
    (_flip_weight_byte, "model.safetensors", "SHA-256 differs"),
    (_resize_in_config, "model.safetensors", "does not fit config.json"),
    (_config_not_json, "config.json", "not valid JSON"),
    (_tokenizer_garbage, "tokenizer.json", "not a saved rnnkit tokenizer"),
    (_newer_format, "config.json", "newer rnnkit"),
    (_weights_missing, "saved", "lacks model.safetensors"),
]


@pytest.mark.parametrize(
    ("damage", "file", "message"), DAMAGES, ids=lambda d: getattr(d, "__name__", None)
)
def test_a_damaged_folder_is_one_clear_error_naming_the_file(saved, damage, file, message):
    damage(saved)
    for load in (LanguageModel.from_pretrained, rnnkit.load_pretrained, lm.load):
        with pytest.raises(CheckpointError) as error:
            load(saved)
        _one_line(error, file, message)


def test_another_tasks_folder_is_refused(saved):
    with pytest.raises(CheckpointError) as error:
        Classifier.from_pretrained(saved)
    _one_line(error, "'lm' model, not a 'classify' one")


def test_parts_that_do_not_fit_are_refused_and_nothing_is_written(saved, tmp_path):
    case = _lm()
    other = train_tokenizer("char", ["abc"])  # another vocabulary size
    with pytest.raises(ValueError) as error:
        case.model.save_pretrained(tmp_path / "new", tokenizer=other)
    _one_line(error, "do not fit", "embedding.weight")
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new*"))
    before = (saved / "model.safetensors").read_bytes()
    with pytest.raises(ValueError):
        case.model.save_pretrained(saved, force=True, tokenizer=other)
    assert (saved / "model.safetensors").read_bytes() == before  # the old folder, whole
    LanguageModel.from_pretrained(saved)


def test_missing_parts_and_bad_weights_are_refused(tmp_path):
    case = _lm()
    with pytest.raises(ValueError) as error:
        case.model.save_pretrained(tmp_path / "out")
    _one_line(error, "LanguageModel.save_pretrained needs tokenizer=")
    case = _forecast()
    with pytest.raises(ValueError) as error:
        case.model.save_pretrained(tmp_path / "out", scaler=case.parts["scaler"])
    _one_line(error, "needs columns=")
    with pytest.raises(ValueError, match="do not fit"):  # 3 column names for 2 variables
        case.model.save_pretrained(tmp_path / "out", scaler=case.parts["scaler"], columns="abc")
    case = _lm()
    with torch.no_grad():
        case.model.decoder.bias[0] = float("nan")
    with pytest.raises(ValueError) as error:
        case.model.save_pretrained(tmp_path / "out", **case.parts)
    _one_line(error, "NaN or inf in decoder.bias")
    assert not (tmp_path / "out").exists()
