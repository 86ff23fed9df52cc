"""Damaged and hostile checkpoints: each is refused with one message naming the file and
what is wrong, before any memory is spent on what it asks for; a damaged best/ falls back
to last/; old checkpoints without checksums load with a notice."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.common.notices import Notice
from rnnkit.tasks.lm import api as lm
from rnnkit.train import checkpoint as ckpt
from rnnkit.train.checkpoint import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = lm.default_corpus()[:1200]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny language-model run with best/ and last/ (2 epochs)."""
    root = tmp_path_factory.mktemp("trained")
    (root / "tiny.txt").write_text(TEXT, encoding="utf-8")
    overrides = (
        *("--data.text", str(root / "tiny.txt"), "--model.hidden_size", "8"),
        *("--model.num_layers", "1", "--model.embedding_size", "4", "--data.batch_size", "4"),
        *("--data.bptt", "10", "--trainer.epochs", "2", "--trainer.progress", "false"),
        *("--trainer.out", str(root / "run")),
    )
    return lm.train(lm.configure(overrides=overrides), log=str).out_dir


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("run.lock"))
    return copy


def _rewrite_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _with_checksums(checkpoint: Path) -> None:
    """Recompute checksums.json, as a forger would: the other checks must still hold."""
    sums = {p.name: ckpt._sha256(p) for p in checkpoint.glob("*.safetensors")}
    (checkpoint / ckpt.CHECKSUMS_FILE).write_text(json.dumps({"sha256": sums}))


def _load(checkpoint: Path):
    return lm.load(checkpoint)


def test_an_intact_checkpoint_loads_silently(run):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, _, _ = lm.load(run)
    assert not model.training


# Each damage: (name, function of the checkpoint directory, what the message must say)
def _truncate(c: Path) -> None:
    data = (c / ckpt.MODEL_FILE).read_bytes()
    (c / ckpt.MODEL_FILE).write_bytes(data[: len(data) - 100])


def _weights_bit(c: Path) -> None:
    _flip_byte(c / ckpt.MODEL_FILE, (c / ckpt.MODEL_FILE).stat().st_size - 7)


def _header_bit(c: Path) -> None:
    _flip_byte(c / ckpt.MODEL_FILE, 20)


def _huge_header(c: Path) -> None:
    data = (c / ckpt.MODEL_FILE).read_bytes()
    (c / ckpt.MODEL_FILE).write_bytes(struct.pack("<Q", 10**15) + data[8:])


def _pickle_weights(c: Path) -> None:
    (c / ckpt.MODEL_FILE).write_bytes(pickle.dumps({"weight": [1.0] * 100}))


def _empty_weights(c: Path) -> None:
    (c / ckpt.MODEL_FILE).write_bytes(b"")


def _config_list(c: Path) -> None:
    (c / ckpt.CONFIG_FILE).write_text("[1]")


def _config_not_json(c: Path) -> None:
    (c / ckpt.CONFIG_FILE).write_text('{"model": ')


def _hidden_20000(c: Path) -> None:
    _rewrite_json(
        c / ckpt.CONFIG_FILE, lambda d: d | {"model": d["model"] | {"hidden_size": 20000}}
    )


def _hidden_1e9(c: Path) -> None:
    _rewrite_json(
        c / ckpt.CONFIG_FILE, lambda d: d | {"model": d["model"] | {"hidden_size": 10**9}}
    )


def _layers_1e6(c: Path) -> None:
    _rewrite_json(c / ckpt.CONFIG_FILE, lambda d: d | {"model": d["model"] | {"num_layers": 10**6}})


def _cell_changed(c: Path) -> None:
    _rewrite_json(c / ckpt.CONFIG_FILE, lambda d: d | {"model": d["model"] | {"cell": "rnn_tanh"}})


def _hidden_negative(c: Path) -> None:
    _rewrite_json(c / ckpt.CONFIG_FILE, lambda d: d | {"model": d["model"] | {"hidden_size": -5}})


def _tokenizer_missing(c: Path) -> None:
    (c / "tokenizer.json").unlink()


def _nan_weights(c: Path) -> None:
    tensors = load_file(c / ckpt.MODEL_FILE)
    name = next(iter(tensors))
    tensors[name][0] = float("nan")
    save_file(tensors, c / ckpt.MODEL_FILE)
    _with_checksums(c)


def _extra_tensor(c: Path) -> None:
    tensors = load_file(c / ckpt.MODEL_FILE) | {"spare": torch.zeros(3)}
    save_file(tensors, c / ckpt.MODEL_FILE)
    _with_checksums(c)


def _float64_weights(c: Path) -> None:
    tensors = {k: v.double() for k, v in load_file(c / ckpt.MODEL_FILE).items()}
    save_file(tensors, c / ckpt.MODEL_FILE)
    _with_checksums(c)


def _checksums_garbage(c: Path) -> None:
    (c / ckpt.CHECKSUMS_FILE).write_text('{"sha256": 3}')


DAMAGE = [
    (_truncate, "damaged: its header describes .* bytes of tensor data but the file holds"),
    (_weights_bit, "SHA-256 differs"),
    (_header_bit, "damaged: its SHA-256 differs"),
    (_huge_header, "header claims"),
    (_pickle_weights, "damaged"),
    (_empty_weights, "too short for a safetensors header"),
    (_config_list, "holds a JSON list, not an object"),
    (_config_not_json, "not valid JSON"),
    (_hidden_20000, "does not fit config.json"),
    (_hidden_1e9, "asks for a model that cannot be built"),
    (_layers_1e6, "model.num_layers 1000000"),
    (_cell_changed, "does not fit config.json"),
    (_hidden_negative, "hidden_size"),
    (_tokenizer_missing, "lacks tokenizer.json"),
    (_nan_weights, "holds NaN or inf"),
    (_extra_tensor, r"unexpected \['spare'\]"),
    (_float64_weights, r"is stored as \[\d+, 4\] F64, the config builds \[\d+, 4\] F32"),
    (_checksums_garbage, "no SHA-256 for model.safetensors"),
]


@pytest.mark.parametrize("damage, message", DAMAGE, ids=[d.__name__[1:] for d, _ in DAMAGE])
def test_a_damaged_checkpoint_is_one_clear_error(run, damage, message):
    damage(run / "best")
    with pytest.raises((CheckpointError, ValueError), match=message) as error:
        lm.load(run / "best")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("damage, message", DAMAGE[:6], ids=[d.__name__[1:] for d, _ in DAMAGE[:6]])
def test_a_damaged_best_falls_back_to_last_with_a_notice(run, damage, message):
    damage(run / "best")
    with pytest.warns(Notice, match=rf"best is damaged .*{message}.*; loaded .*last instead"):
        model, _, _ = lm.load(run)
    expected = load_file(run / "last" / ckpt.MODEL_FILE)
    assert torch.equal(model.state_dict()["embedding.weight"], expected["embedding.weight"])


def test_both_damaged_is_one_error_naming_both(run):
    _truncate(run / "best")
    _weights_bit(run / "last")
    with pytest.raises(CheckpointError, match=r"best.*damaged.*; and .*last.*damaged"):
        lm.load(run)


def test_a_checkpoint_from_before_checksums_loads_with_a_notice(run):
    (run / "best" / ckpt.CHECKSUMS_FILE).unlink()
    with pytest.warns(Notice, match="has no checksums.json .*: its weights load unverified"):
        lm.load(run / "best")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: s | {"optimizer": None}, "optimizer must be an object"),
        (lambda s: {k: v for k, v in s.items() if k != "optimizer"}, "optimizer must be"),
        (lambda s: s | {"step": -3}, "step must be an integer >= 0, got -3"),
        (lambda s: s | {"position": "x"}, "position must be an integer"),
        (lambda s: s | {"best_valid": "low"}, "best_valid must be a number or null"),
        (lambda s: s | {"schedule": [1]}, "schedule must be an object"),
    ],
)
def test_a_damaged_state_json_is_refused_at_resume(run, damage, message):
    _rewrite_json(run / "last" / ckpt.STATE_JSON, damage)
    with pytest.raises(CheckpointError, match=message):
        lm.train(resume=run, log=str)


def test_a_foreign_rng_state_is_refused_at_resume(run):
    tensors = load_file(run / "last" / ckpt.STATE_TENSORS)
    tensors["rng.torch"] = torch.zeros(7, dtype=torch.uint8)
    save_file(tensors, run / "last" / ckpt.STATE_TENSORS)
    _with_checksums(run / "last")
    with pytest.raises(CheckpointError, match=r"rng\.torch must be a torch\.uint8 tensor of shape"):
        lm.train(resume=run, log=str)


def test_foreign_optimiser_state_is_refused_at_resume(run):
    tensors = load_file(run / "last" / ckpt.STATE_TENSORS)
    name = next(k for k in tensors if k.endswith("exp_avg"))
    tensors[name] = torch.zeros(2, 2)
    save_file(tensors, run / "last" / ckpt.STATE_TENSORS)
    _with_checksums(run / "last")
    with pytest.raises(CheckpointError, match=rf"{name} is \[2, 2\], its parameter"):
        lm.train(resume=run, log=str)


def test_resume_never_writes_through_a_linked_metrics_log(run, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(ValueError, match=r"metrics\.jsonl' is a symbolic link"):
        lm.train(resume=run, log=str)
    assert victim.read_text() == "precious\n"


def test_resume_removes_the_temporaries_of_a_killed_checkpoint_write(run):
    (run / ".last.tmp-0badc0de").mkdir()
    (run / ".last.tmp-0badc0de" / "model.safetensors").write_bytes(b"half")
    lm.train(resume=run, changes={"trainer": {"max_steps": 1}}, log=str)
    assert not list(run.glob(".*tmp-*"))


def test_the_cli_prints_the_fallback_as_one_note_and_a_total_loss_as_one_error(run):
    _truncate(run / "best")
    result = CliRunner().invoke(app, ["sample", str(run), "--max-tokens", "5"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "best is damaged" in notes[0], result.stderr
    _weights_bit(run / "last")
    result = CliRunner().invoke(app, ["sample", str(run), "--max-tokens", "5"])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "damaged" in lines[0]


def test_a_resume_takes_the_best_loss_from_a_newer_best(run):
    """A kill between saving best/ and last/ leaves last/ with a stale best loss: the
    resumed run must not then replace best/ with a worse model."""
    best = json.loads((run / "best" / ckpt.STATE_JSON).read_text())["best_valid"]
    _rewrite_json(run / "last" / ckpt.STATE_JSON, lambda s: s | {"best_valid": 99.0})
    resumed = lm.train(resume=run, log=str)
    assert resumed.result.best_valid_loss == best


def test_a_damaged_best_does_not_stop_a_resume_from_last(run):
    (run / "best" / ckpt.STATE_JSON).write_text("{")
    resumed = lm.train(resume=run, log=str)
    assert resumed.result.step > 0
