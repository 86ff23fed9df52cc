"""`rnnkit train tag` and `rnnkit predict` with a tagger, end to end on tiny CoNLL data."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rnnkit.cli import app

CONLL = """-DOCSTART- -X- -X- O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER
visited VBD B-VP O
Paris NNP B-NP I-LOC
. . O O

John NNP B-NP I-PER
went VBD B-VP O
to TO B-PP O
London NNP B-NP I-LOC
. . O O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O
"""


def test_train_tag_and_predict(tmp_path):
    data = tmp_path / "eng.train"
    data.write_text(CONLL, encoding="utf-8")
    out = tmp_path / "run"
    args = [
        "train",
        "tag",
        "--train",
        str(data),
        "--valid",
        str(data),
        "--trainer.epochs",
        "30",
        "--trainer.progress",
        "false",
        "--trainer.out",
        str(out),
        "--model.hidden_size",
        "16",
        "--data.batch_size",
        "2",
        "--optim.lr",
        "0.05",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "FB1: 100.00" in result.output
    assert ", F1 100.00, " in result.output  # the per-epoch F1 agrees with the final report
    assert (out / "valid.conll").read_text().splitlines()[0] == "Peter I-PER I-PER"

    result = CliRunner().invoke(app, ["predict", str(out), "Peter visited London .", "--json"])
    assert result.exit_code == 0, result.output
    spans = json.loads(result.output)["spans"]
    assert [(s["type"], s["text"]) for s in spans] == [("PER", "Peter"), ("LOC", "London")]
    result = CliRunner().invoke(app, ["predict", str(out), "John went to Paris"])
    assert result.output.splitlines() == ["John I-PER", "went O", "to O", "Paris I-LOC"]

    result = CliRunner().invoke(app, ["eval", str(out), str(data), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["sentences"] == 3 and scores["tokens"] == 15
    assert scores["f1"] == 1.0 and scores["token_accuracy"] == 1.0
    assert set(scores["f1_by_type"]) == {"PER", "LOC", "ORG", "MISC"}


def test_tag_bad_file(tmp_path):
    data = tmp_path / "bad"
    data.write_text("Peter NNP I-PER\nvisited O\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "tag", "--train", str(data)])
    assert result.exit_code == 2
    assert "bad:2: 2 columns, earlier lines have 3" in result.output
