"""`rnnkit train seq2seq` and `rnnkit translate` end to end on tiny data."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.seq2seq import api as seq2seq

TINY = [
    "--trainer.progress",
    "false",
    "--trainer.threads",
    "1",
    "--model.hidden_size",
    "16",
    "--model.embedding_size",
    "8",
    "--model.attention_size",
    "8",
    "--model.dropout",
    "0",
]


def test_train_and_translate_a_reversal_task(tmp_path):
    rng = random.Random(0)
    words = {"".join(rng.choice("abc") for _i in range(rng.randint(1, 3))) for _j in range(60)}
    data = tmp_path / "reverse.tsv"
    data.write_text("".join(f"{w}\t{w[::-1]}\n" for w in sorted(words)), encoding="utf-8")
    out = tmp_path / "run"
    args = [
        "train",
        "seq2seq",
        "--train",
        str(data),
        "--valid",
        str(data),
        *TINY,
        "--trainer.epochs",
        "12",
        "--trainer.out",
        str(out),
        "--data.batch_size",
        "8",
        "--optim.lr",
        "0.02",
        "--model.attention",
        "luong",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["valid"]["exact_match"] >= 50.0, result.output  # learning, not chance
    assert (out / "attention.png").is_file() and "valid: exact match" in result.output

    result = CliRunner().invoke(app, ["translate", str(out), "abc", "--beam", "3", "--json"])
    assert result.exit_code == 0, result.output
    translated = json.loads(result.output)
    assert translated == seq2seq.translate(out, ["abc"], beam=3)[0]
    assert translated["source"] == "abc" and translated["score"] <= 0

    png = tmp_path / "att.png"
    result = CliRunner().invoke(
        app, ["translate", str(out), "--attention", str(png)], input="ab\n\nbca\n"
    )
    expected = [r["translation"] for r in seq2seq.translate(out, ["ab", "bca"], beam=1)]
    assert result.exit_code == 0 and result.output.split() == expected, result.output
    assert png.is_file()

    result = CliRunner().invoke(app, ["eval", str(out), str(data), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["pairs"] == len(words)
    for name in ("exact_match", "bleu", "chrf"):  # the same figures as the report's
        assert scores[name] == pytest.approx(report["valid"][name]), name


def test_train_on_generated_dates(tmp_path):
    out = tmp_path / "dates"
    args = [
        "train",
        "seq2seq",
        "--data.dates",
        "64",
        "--data.dates_valid",
        "8",
        "--data.dates_test",
        "16",
        "--trainer.epochs",
        "1",
        "--trainer.out",
        str(out),
        *TINY,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["test"]["pairs"] == 16 and report["valid"]["pairs"] == 8
    assert set(report["test"]) >= {"exact_match", "bleu", "chrf"}


def test_bad_inputs(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\nno tab\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "seq2seq", "--train", str(bad)])
    assert result.exit_code == 2 and "bad.tsv:2: expected 'source<TAB>target'" in result.output
    result = CliRunner().invoke(app, ["train", "seq2seq"])
    assert result.exit_code == 2 and "data.train is required" in result.output
    result = CliRunner().invoke(app, ["translate", str(tmp_path / "missing"), "x"])
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_word_and_bpe_vocabularies(tmp_path, kind):
    pairs = [
        ("le chat noir", "the black cat"),
        ("un chien", "a dog"),
        ("le chien", "the dog"),
        ("un chat noir", "a black cat"),
    ] * 3
    data = tmp_path / "fr-en.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    args = (
        "--data.tokenizer",
        kind,
        "--data.train",
        str(data),
        *TINY,
        "--trainer.epochs",
        "1",
        "--trainer.out",
        str(tmp_path / kind),
    )
    sections = seq2seq.configure(overrides=args)
    run = seq2seq.train(sections, log=lambda _: None)
    translator = seq2seq.load(run.out_dir)
    assert translator.tokenizers.source.kind == translator.tokenizers.target.kind == kind
    (result,) = translator.translate(["le chat"], beam=2)
    assert isinstance(result["translation"], str) and run.report["valid"]["pairs"] == 1
