"""`rnnkit train classify` and `rnnkit predict` end to end on a tiny labelled file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.classify import api as classify

SENTENCES = [
    ("pos", "a great and funny film"),
    ("neg", "a dull and boring film"),
    ("pos", "great acting , great story"),
    ("neg", "boring , dull , long"),
    ("pos", "funny and great"),
    ("neg", "dull story"),
] * 2


def _write_sentences(path):
    path.write_text("".join(f"{label} {text}\n" for label, text in SENTENCES), encoding="utf-8")
    return path


def test_train_and_predict(tmp_path):
    data = _write_sentences(tmp_path / "train.txt")
    out = tmp_path / "run"
    args = [
        "train",
        "classify",
        "--train",
        str(data),
        "--valid",
        str(data),
        "--trainer.epochs",
        "12",
        "--trainer.progress",
        "false",
        "--trainer.out",
        str(out),
        "--model.hidden_size",
        "12",
        "--model.embedding_size",
        "8",
        "--model.dropout",
        "0",
        "--data.batch_size",
        "4",
        "--optim.lr",
        "0.03",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "accuracy 100.00%" in result.output
    assert (out / "confusion.png").is_file() and (out / "report.json").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["names"] == ["neg", "pos"] and report["confusion"] == [[6, 0], [0, 6]]

    result = CliRunner().invoke(app, ["predict", str(out), "great funny story", "--json"])
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.output)
    assert prediction["label"] == "pos"
    assert abs(sum(prediction["probabilities"].values()) - 1) < 1e-6

    result = CliRunner().invoke(app, ["predict", str(out)], input="dull and long\n\n")
    assert result.exit_code == 0 and result.output.startswith("neg\t")

    result = CliRunner().invoke(app, ["eval", str(out), str(data), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["examples"] == 12 and scores["accuracy"] == 1.0 and scores["macro_f1"] == 1.0
    assert scores["per_class"]["pos"]["support"] == 6
    assert scores == classify.evaluate_file(out, data)
    text = CliRunner().invoke(app, ["eval", str(out), str(data)]).output
    assert "accuracy 1.0000" in text and "per_class.neg.f1 1.0000" in text


def test_eval_names_an_unseen_label_and_lm_only_flags(tmp_path):
    data = _write_sentences(tmp_path / "train.txt")
    run = classify.train(
        classify.configure(
            overrides=(
                *("--data.train", str(data), "--trainer.epochs", "1"),
                *("--trainer.progress", "false", "--trainer.out", str(tmp_path / "run")),
                *("--model.hidden_size", "4", "--model.embedding_size", "4"),
            )
        ),
        log=lambda _: None,
    )
    other = tmp_path / "other.txt"
    other.write_text("meh a so-so film\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", str(run.out_dir), str(other)])
    assert result.exit_code == 2 and "unknown label 'meh'" in result.output
    result = CliRunner().invoke(app, ["eval", str(run.out_dir), str(data), "--bptt", "8"])
    assert result.exit_code == 2 and "--bptt is for language models" in result.output
    result = CliRunner().invoke(app, ["eval", str(run.out_dir)])
    assert result.exit_code == 2 and "eval needs a file" in result.output
    latin = tmp_path / "latin.txt"
    latin.write_bytes("pos un café crème\n".encode("latin-1"))
    result = CliRunner().invoke(app, ["eval", str(run.out_dir), str(latin)])
    assert result.exit_code == 2, result.output
    assert "is not valid utf-8" in result.output and "e.g. --encoding latin-1" in result.output
    result = CliRunner().invoke(
        app, ["eval", str(run.out_dir), str(latin), "--encoding", "latin-1"]
    )
    assert result.exit_code == 0 and "examples 1" in result.output, result.output
    result = CliRunner().invoke(app, ["train", "classify", "--train", str(latin)])
    assert result.exit_code == 2 and "e.g. --data.encoding latin-1" in result.output


def test_bad_inputs(tmp_path):
    data = tmp_path / "bad.txt"
    data.write_text("pos fine\nneg\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "classify", "--train", str(data)])
    assert result.exit_code == 2
    assert "bad.txt:2: expected 'label<space>text'" in result.output
    result = CliRunner().invoke(app, ["train", "classify"])
    assert result.exit_code == 2 and "data.train is required" in result.output
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "missing"), "hello"])
    assert result.exit_code == 2 and "does not exist" in result.output


def _task(word_dropout: float):
    import torch

    from rnnkit.data.tokenizers import train_tokenizer
    from rnnkit.tasks.classify.api import ClassifyDataConfig, ClassifyTask
    from rnnkit.tasks.classify.labelled import Example, LabelSet

    examples = [Example(text, label) for label, text in SENTENCES * 10]
    tokenizer = train_tokenizer("word", [e.text + "\n" for e in examples])
    labels = LabelSet.from_labels(e.label for e in examples)
    data = ClassifyDataConfig(batch_size=8, word_dropout=word_dropout)
    torch.manual_seed(0)
    return ClassifyTask(tokenizer, labels, examples, examples, data, seed=3), tokenizer


def test_word_dropout_rate_padding_and_resume():
    plain, tokenizer = _task(0.0)
    dropped = _task(0.3)[0]
    unk = tokenizer.unk_id
    pairs = list(zip(plain.batches(2, 0), dropped.batches(2, 0), strict=True))
    words = replaced = 0
    for (ids, lengths, labels), (ids2, lengths2, labels2) in pairs:
        assert (lengths == lengths2).all() and (labels == labels2).all()
        real = ids != 0
        assert (ids2[~real] == 0).all()  # padding stays padding
        changed = ids2 != ids
        assert (ids2[changed] == unk).all()  # only ever <unk>
        words, replaced = words + int(real.sum()), replaced + int(changed.sum())
    assert 0.2 < replaced / words < 0.4
    # resuming at batch 5 gives the very batches an uninterrupted epoch gives from there
    again = list(_task(0.3)[0].batches(2, 5))
    assert len(again) == len(pairs) - 5
    for resumed, pair in zip(again, pairs[5:], strict=True):
        assert (resumed[0] == pair[1][0]).all()


def test_word_dropout_out_of_range_is_named():
    import pytest

    with pytest.raises(ValueError, match=r"data.word_dropout must be in \[0, 1\), got 1.0"):
        _task(1.0)


@pytest.mark.parametrize(("kind", "vocab_size"), [("char", None), ("bpe", 300)])
def test_char_and_bpe_tokenizers_train_save_and_predict(tmp_path, kind, vocab_size):
    data = _write_sentences(tmp_path / "train.txt")
    out = tmp_path / "run"
    sections = classify.configure(
        data={
            "train": str(data),
            "valid": str(data),
            "tokenizer": kind,
            "vocab_size": vocab_size,
            "batch_size": 4,
        },
        model={"hidden_size": 12, "embedding_size": 8, "dropout": 0.0},
        trainer={"epochs": 12, "progress": False, "out": str(out)},
        optim={"lr": 0.03},
    )
    run = classify.train(sections, log=lambda _: None)
    assert run.report.accuracy == 1.0
    _, tokenizer, _ = classify.load(out)
    assert tokenizer.kind == kind
    # An unseen word still becomes known pieces, not one <unk>.
    assert tokenizer.unk_id not in tokenizer.encode("funnier")
    [prediction] = classify.predict(out, ["great , funny"])
    assert prediction["label"] == "pos"


def test_vectors_need_word_tokens(tmp_path):
    data = _write_sentences(tmp_path / "train.txt")
    vectors = tmp_path / "v.txt"
    vectors.write_text("great 0.1 0.2\n", encoding="utf-8")
    sections = classify.configure(
        data={"train": str(data), "tokenizer": "bpe", "vectors": str(vectors)}
    )
    with pytest.raises(ValueError, match=r"need data\.tokenizer 'word', got 'bpe'"):
        classify.train(sections, log=lambda _: None)
