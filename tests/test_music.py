"""Piano rolls, MIDI round trips, the music model's loss and generation, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.text import DataError
from rnnkit.tasks.music.data import chorale_of, load_chorales, piano_roll, read_midi, write_midi
from rnnkit.tasks.music.model import MusicConfig, MusicModel, generate, nll_per_step

CHORALE = [[60, 64, 67], [60, 64, 67], [62, 65, 69], [], [59, 62, 67, 74]]


def test_piano_roll_round_trip():
    roll = piano_roll(CHORALE)
    assert roll.shape == (5, 88) and roll.sum() == 13
    assert roll[0, 60 - 21] == 1 and roll[3].sum() == 0
    assert chorale_of(roll) == CHORALE
    with pytest.raises(DataError, match=r"pitch 120 at step 0 is outside the range 21\.\.108"):
        piano_roll([[120]])


def test_midi_round_trip(tmp_path):
    path = tmp_path / "piece.mid"
    write_midi(CHORALE, path)
    assert read_midi(path) == CHORALE
    import mido

    notes = [m for m in mido.MidiFile(path).tracks[0] if m.type == "note_on"]
    assert len(notes) == 3 + 3 + 4  # steps 0-1 held: one note_on each


def test_load_chorales_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": [[[60], ["x"]]]}), encoding="utf-8")
    with pytest.raises(DataError, match=r"train\[0\] is not a list of lists of MIDI pitches"):
        load_chorales(bad)


def test_loss_is_nll_per_step():
    """With all-zero logits every pitch has p = 1/2: NLL per step = P log 2."""
    logits = torch.zeros(4, 2, 88)
    targets = torch.randint(0, 2, (4, 2, 88)).float()
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    total, steps = nll_per_step(logits, targets, mask)
    assert steps == 5
    assert float(total / steps) == pytest.approx(88 * torch.log(torch.tensor(2.0)).item())


def test_parameter_counts_match_the_paper_setting():
    """Chung et al. 2014: about 20k parameters for tanh 100, GRU 46, LSTM 36 (88 pitches)."""
    for cell, hidden in (("rnn_tanh", 100), ("gru_reset_before", 46), ("lstm", 36)):
        n = MusicModel(MusicConfig(cell=cell, hidden_size=hidden)).num_parameters()
        assert 18_000 < n < 30_000, (cell, n)


def test_generate_is_seeded_and_binary():
    model = MusicModel(MusicConfig(hidden_size=8, low=60, high=71))
    a = generate(model, 10, num_samples=3, seed=1)
    assert a.shape == (10, 3, 12) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, generate(model, 10, num_samples=3, seed=1))
    primer = piano_roll([[60, 64], [62]], 60, 71)
    assert generate(model, 4, primer, seed=0).shape == (4, 1, 12)
    with pytest.raises(ValueError, match=r"primer must be \[T, 12\]"):
        generate(model, 4, torch.zeros(2, 5))


def test_cli_train_and_generate(tmp_path):
    data = tmp_path / "chorales.json"
    chorales = [[[60 + (t * k) % 12, 67] for t in range(8)] for k in range(1, 7)]
    data.write_text(json.dumps({"train": chorales[:4], "valid": chorales[4:]}), encoding="utf-8")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "music",
            "--data",
            str(data),
            "--trainer.epochs",
            "2",
            "--trainer.out",
            str(out),
            "--trainer.progress",
            "false",
            "--model.hidden_size",
            "8",
            "--model.low",
            "55",
            "--model.high",
            "80",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "valid NLL" in result.output
    valid_nll = float(result.output.split("valid NLL ")[1].split()[0])
    result = CliRunner().invoke(app, ["eval", str(out), str(data)])  # two splits, no test
    assert result.exit_code == 2 and "has no split 'test'" in result.output
    test_file = tmp_path / "test.json"
    test_file.write_text(json.dumps({"test": chorales[4:]}), encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", str(out), str(test_file), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["split"] == "test" and scores["chorales"] == 2 and scores["steps"] == 14
    assert scores["nll"] == pytest.approx(valid_nll, abs=1e-3)  # the same chorales
    result = CliRunner().invoke(
        app,
        ["generate", "music", str(out), "--out", str(tmp_path / "g"), "--steps", "6", "-n", "2"],
    )
    assert result.exit_code == 0, result.output
    for n in (1, 2):
        assert len(read_midi(tmp_path / "g" / f"piece-{n}.mid")) <= 6
        assert (tmp_path / "g" / f"piece-{n}.png").stat().st_size > 0
