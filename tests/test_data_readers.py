"""Readers for classification and tagging files: formats, and errors with file:line."""

from __future__ import annotations

import pytest

from rnnkit.data.text import DataError
from rnnkit.tasks.classify.labelled import LabelSet, read_labelled
from rnnkit.tasks.tag.conll import format_conll, read_conll


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_sst_lines(tmp_path):
    path = _write(tmp_path, "train", "1 a gripping film .\n0 dull , dull , dull\n\n")
    examples = read_labelled(path)
    assert [(e.label, e.text) for e in examples] == [
        ("1", "a gripping film ."),
        ("0", "dull , dull , dull"),
    ]


def test_sst_line_without_text(tmp_path):
    path = _write(tmp_path, "train", "1 fine\n0\n")
    with pytest.raises(DataError, match=r"train:2: expected 'label<space>text', got '0'"):
        read_labelled(path)


def test_csv_tsv_jsonl(tmp_path):
    csv_path = _write(tmp_path, "d.csv", 'id,review,stars\n1,"good, really",pos\n2,bad,neg\n')
    got = read_labelled(csv_path, text_column="review", label_column="stars")
    assert [(e.text, e.label) for e in got] == [("good, really", "pos"), ("bad", "neg")]
    tsv_path = _write(tmp_path, "d.tsv", "text\tlabel\nfine\tpos\n")
    assert read_labelled(tsv_path)[0].label == "pos"
    jsonl_path = _write(tmp_path, "d.jsonl", '{"text": "ok", "label": 1}\n\n')
    assert read_labelled(jsonl_path)[0].label == "1"


def test_delimited_errors(tmp_path):
    path = _write(tmp_path, "d.csv", "text,label\nfine,pos\nbroken\n")
    with pytest.raises(DataError, match=r"d\.csv:3: 1 columns, the header has 2"):
        read_labelled(path)
    path = _write(tmp_path, "e.csv", "body,label\nfine,pos\n")
    with pytest.raises(DataError, match=r"e\.csv:1: no column 'text'"):
        read_labelled(path)


def test_jsonl_errors(tmp_path):
    path = _write(tmp_path, "d.jsonl", '{"text": "ok", "label": 1}\n{"text": "no label"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: expected an object with keys"):
        read_labelled(path)
    path = _write(tmp_path, "e.jsonl", "{oops\n")
    with pytest.raises(DataError, match=r"e\.jsonl:1: not valid JSON"):
        read_labelled(path)


def test_label_set():
    labels = LabelSet.from_labels(["pos", "neg", "pos"])
    assert labels.names == ("neg", "pos") and labels.id("pos") == 1
    assert LabelSet.from_dict(labels.to_dict()) == labels
    with pytest.raises(DataError, match="unknown label 'meh'"):
        labels.id("meh")
    with pytest.raises(DataError, match="at least two labels"):
        LabelSet.from_labels(["pos"])


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER
"""


def test_conll(tmp_path):
    sentences = read_conll(_write(tmp_path, "eng.train", CONLL))
    assert len(sentences) == 2
    assert sentences[0].tokens == ("EU", "rejects", "German")
    assert sentences[1].tags == ("I-PER", "I-PER")
    iob2 = read_conll(_write(tmp_path, "f", CONLL.replace("I-ORG", "B-ORG")), scheme="IOB2")
    assert iob2[0].tags == ("B-ORG", "O", "I-MISC")
    text = format_conll(sentences, [["I-ORG", "O", "O"], ["I-PER", "I-PER"]])
    assert text.splitlines()[2] == "German I-MISC O"


def test_conll_errors(tmp_path):
    path = _write(tmp_path, "bad", "EU NNP B-NP I-ORG\nrejects VBZ O\n")
    with pytest.raises(DataError, match=r"bad:2: 3 columns, earlier lines have 4"):
        read_conll(path)
    path = _write(tmp_path, "bad2", "a O\nb E-PER\n\n")
    with pytest.raises(DataError, match=r"sentence starting at line 1: tag 'E-PER' at position 1"):
        read_conll(path)


def test_shared_conll_and_sst(shared_data):
    train = read_conll(shared_data / "conll2003" / "eng.train")
    assert len(train) == 14041
    dev = read_labelled(shared_data / "sst2" / "stsa.binary.dev")
    assert len(dev) == 872 and {e.label for e in dev} == {"0", "1"}
