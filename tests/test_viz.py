"""`rnnkit viz` without a browser: the data against the model computed another way, token
offsets in UTF-16 units for every tokenizer, the ranking math, and the errors at the
boundary. The page in a real browser: tests/test_viz_browser.py."""

from __future__ import annotations

import base64
import itertools
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.spans import token_spans, utf16_offsets
from rnnkit.diagnostics import gate_trace, ranking
from rnnkit.diagnostics.page import render
from rnnkit.diagnostics.units import LEVELS, quantise
from rnnkit.nn.cells import CELLS
from rnnkit.tasks.lm import viz
from viz_cases import TEXT, model, saved, tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def codes(signal: dict) -> np.ndarray:
    """A signal's dequantised values [T, size] from the JSON, as a tool would read them."""
    q = np.frombuffer(base64.b64decode(signal["q"]), dtype=np.uint8)
    q = q.reshape(signal["size"], -1)  # [size, T]
    return (np.array(signal["lo"])[:, None] + q * np.array(signal["scale"])[:, None]).T


def utf16_slice(text: str, start: int, end: int) -> str:
    return text.encode("utf-16-le")[2 * start : 2 * end].decode("utf-16-le")


CASES = [(cell, "char", {}) for cell in CELLS] + [
    ("lstm", "word", {}),
    ("gru", "bpe", {}),
    ("lstm", "char", {"proj_size": 5}),
]


@pytest.mark.parametrize(("cell", "kind", "config"), CASES)
def test_data_equals_the_model(cell, kind, config):
    tok = tokenizer(kind)
    lm = model(cell, tok, **config)
    data = viz.visualise(lm, tok, TEXT)
    assert data["layers"][0]["signals"]["h"]["size"] == config.get("proj_size", 8)
    ids = tok.encode(TEXT)
    assert data["tokens"]["ids"] == ids
    inputs = torch.tensor(ids)[:, None]  # [T, 1]
    with torch.no_grad():
        logits, final = lm(inputs)  # the model's own forward (the fused path where it has one)
        top_layer = lm.features(inputs)[0][:, 0]  # [T, R]
    finals = final if isinstance(final, tuple) else (final,)
    for l, layer in enumerate(data["layers"]):
        signals = layer["signals"]
        for name, signal in signals.items():
            error = np.array(signal["scale"]) / 2 + 1e-5  # the quantisation's bound
            values = codes(signal)
            if name == "h" and l == len(data["layers"]) - 1:
                assert np.all(np.abs(values - top_layer.numpy()) <= error)
            if name in ("h", "c"):
                last = finals[0 if name == "h" else 1][l, 0].numpy()  # [size]
                assert np.all(np.abs(values[-1] - last) <= error)
            variance = np.var(values, axis=0)
            np.testing.assert_allclose(signal["variance"], variance, rtol=1e-9, atol=1e-15)
        assert next(iter(signals)) == "h"
        assert ("c" in signals) == (CELLS[cell].num_states == 2)
        if CELLS[cell].gate_names:
            x = (
                lm.embedding(inputs)
                if lm.embedding is not None
                else F.one_hot(inputs, lm.vocab_size).float()
            )
            trace = gate_trace(lm.rnn, x, layer_index=l)
            for gate, values in trace.gates.items():
                signal = signals[gate]
                assert signal["gate"]
                error = np.array(signal["scale"]) / 2 + 1e-5
                assert np.all(np.abs(codes(signal) - values[:, 0].numpy()) <= error)
    p = torch.softmax(logits[:, 0].double(), dim=-1)  # [T, V]
    top = p.topk(5, dim=-1)
    preds = data["predictions"]
    assert preds["top_ids"] == top.indices.tolist()
    np.testing.assert_allclose(preds["top_probs"], top.values.numpy(), rtol=1e-5)
    true = p[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    np.testing.assert_allclose(preds["next_prob"][:-1], true.numpy(), rtol=1e-5)
    nll = F.cross_entropy(logits[:-1, 0].double(), torch.tensor(ids[1:]), reduction="none")
    np.testing.assert_allclose(preds["loss"][:-1], nll.numpy(), rtol=1e-5)
    assert preds["next_prob"][-1] is None and preds["loss"][-1] is None


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_token_offsets_are_utf16_units(kind):
    tok = tokenizer(kind)
    text = TEXT + "tail 😀"
    ids = tok.encode(text)
    spans = token_spans(tok, text, ids)
    assert len(spans) == len(ids)
    pieces = [utf16_slice(text, a, b) for a, b in spans]
    if kind == "char":
        assert pieces == list(text)
    elif kind == "word":
        words = [w for line in text.split("\n") for w in [*line.split(), "\n"]][:-1]
        assert pieces == words
    else:  # the spans tile the text
        assert "".join(pieces) == text
        assert all(b1 == a2 for (_, b1), (a2, _) in itertools.pairwise(spans))
    assert spans[-1][1] == len(text.encode("utf-16-le")) // 2
    emoji = text.index("😀")  # a code point index; two UTF-16 units
    assert utf16_offsets(text)[emoji + 1] - utf16_offsets(text)[emoji] == 2


def test_bpe_split_character_gets_an_empty_span():
    """Byte-level BPE may split a character's bytes; the character goes to the token with
    its first byte."""
    tok = tokenizer("bpe")
    text = "\U0001f9ea"  # unseen: its 4 bytes are 4 byte tokens
    ids = tok.encode(text)
    assert len(ids) > 1
    assert token_spans(tok, text, ids) == [(0, 2)] + [(2, 2)] * (len(ids) - 1)


def test_quantise_bounds_the_error_and_uses_the_whole_range():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 6)) * np.arange(1, 7)
    values[:, 3] = 0.25  # a constant unit
    q = quantise(values)
    assert q.q.shape == (6, 50)
    assert np.all(np.abs(q.values() - values) <= q.scale / 2 + 1e-15)
    assert q.q[[0, 1, 2, 4, 5]].min(axis=1).tolist() == [0] * 5
    assert q.q[[0, 1, 2, 4, 5]].max(axis=1).tolist() == [LEVELS] * 5
    assert q.scale[3] == 0 and np.all(q.values()[:, 3] == 0.25)


def test_ranking_math():
    rng = np.random.default_rng(1)
    T = 40
    indicator = (rng.random(T) < 0.3).astype(float)
    values = rng.normal(size=(T, 5))
    values[:, 1] = 2 * indicator - 0.5  # follows the pattern exactly
    values[:, 2] = -3 * indicator  # follows it inverted
    values[:, 4] = 7.0  # constant
    r = ranking.pattern_correlation(values, indicator)
    for u in (0, 3):
        assert r[u] == pytest.approx(np.corrcoef(values[:, u], indicator)[0, 1], rel=1e-12)
    assert r[1] == pytest.approx(1) and r[2] == pytest.approx(-1) and r[4] == 0
    assert set(ranking.rank(r, by_magnitude=True)[:2].tolist()) == {1, 2}
    assert ranking.rank(r, by_magnitude=True)[-1] == 4
    ties = np.array([0.5, 0.9, 0.5, -0.9])  # ties go by unit index
    assert ranking.rank(ties, by_magnitude=True).tolist() == [1, 3, 0, 2]
    assert ranking.rank(ties).tolist() == [1, 0, 2, 3]
    np.testing.assert_allclose(ranking.variance(values), values.var(axis=0))
    gates = np.array([[0.05, 0.5], [0.95, 0.5], [0.5, 0.91], [0.2, 0.09]])
    assert ranking.saturation(gates, gate=True).tolist() == [0.5, 0.5]
    tanh = np.array([[-0.95, 0.5], [0.3, 0.89], [0.91, -0.2], [0.0, 0.0]])
    assert ranking.saturation(tanh, gate=False).tolist() == [0.5, 0.0]
    assert ranking.pattern_correlation(values, np.zeros(T)).tolist() == [0.0] * 5


def test_indicator_marks_tokens_that_share_a_unit_with_a_match():
    spans = [(0, 2), (2, 3), (3, 3), (4, 6)]
    assert ranking.unit_indicator(spans, [(1, 2)], 6).tolist() == [1, 0, 0, 0]
    assert ranking.unit_indicator(spans, [(2, 5)], 6).tolist() == [0, 1, 0, 1]
    assert ranking.unit_indicator(spans, [(4, 4)], 6).tolist() == [0, 0, 0, 1]  # empty match


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("viz")
    text = root / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    return saved(root / "lstm"), text


def test_page_data_survives_markup_in_the_text():
    tok = tokenizer("char")
    text = 'a </script><b>"x"</b> <!-- c'
    data = viz.visualise(model("gru", tok), tok, text)
    html = render(data, "about", "limits")
    element = re.search(r'<script id="viz-data" type="application/json">(.*?)</script>', html, re.S)
    assert element is not None and json.loads(element.group(1))["text"] == text


def test_cli_writes_a_self_contained_page_and_the_same_json(run, tmp_path):
    folder, text = run
    page, data = tmp_path / "viz.html", tmp_path / "viz.json"
    result = invoke("viz", folder, "--text", text, "--out", page, "--json", data)
    assert result.exit_code == 0, result.output
    html = page.read_text(encoding="utf-8")
    assert not re.search(r"(?:src|href)\s*=|https?://|@import", html)  # nothing fetched
    embedded = re.search(
        r'<script id="viz-data" type="application/json">(.*?)</script>', html, re.S
    )
    assert embedded is not None
    written = json.loads(data.read_text(encoding="utf-8"))
    assert json.loads(embedded.group(1)) == written
    assert written["text"] == TEXT and written["offsets"] == "utf-16"
    assert f"all {len(TEXT)} tokens" in html
    only = tmp_path / "only.json"
    result = invoke("viz", folder, "--text", text, "--out", only, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(only.read_text(encoding="utf-8")) == written


def test_a_long_text_is_cut_with_a_note_or_refused_when_strict(run, tmp_path):
    folder, text = run
    out = tmp_path / "cut.json"
    result = invoke("viz", folder, "--text", text, "--json", out, "--max-tokens", 10)
    assert result.exit_code == 0, result.output
    assert f"the text has {len(TEXT)} tokens; showing the first 10" in result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["text"] == TEXT[:10] and len(data["tokens"]["ids"]) == 10
    assert data["limits"]["cut"] and data["limits"]["text_tokens"] == len(TEXT)
    strict = invoke(
        "viz", folder, "--text", text, "--json", tmp_path / "s.json", "--max-tokens", 10, "--strict"
    )
    assert strict.exit_code == 2
    assert f"the text has {len(TEXT)} char tokens, over --max-tokens 10" in strict.output
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--unit", "8"], "--unit 8 is not a unit of layer 0's h (size 8); expected [0, 7]"),
        (["--unit", "-1"], "--unit -1 is not a unit of layer 0's h (size 8)"),
        (["--layer", "2"], "--layer 2 is not a layer of this model; expected [0, 1]"),
        (
            ["--signal", "q"],
            "--signal 'q' is not a signal of this model; expected h, c, i, f, g, o",
        ),
        (["--rank-by", "mean"], "--rank-by 'mean' is not a ranking; expected variance, saturation"),
        (
            ["--max-megabytes", "0.001"],
            "MB of codes, over --max-megabytes 0.001; lower --max-tokens",
        ),
        (["--max-tokens", "0"], "--max-tokens must be a positive integer, got 0"),
        (["--format", "png"], "--format must be one of html, json, got 'png'"),
    ],
)
def test_bad_options_get_one_line(run, tmp_path, args, message):
    folder, text = run
    result = invoke("viz", folder, "--text", text, "--out", tmp_path / "v.html", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "v.html").exists()


def test_empty_text_and_unusable_text(run, tmp_path):
    folder, _ = run
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    result = invoke("viz", folder, "--text", empty, "--out", tmp_path / "v.html")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {empty}: the file is empty"
    tok = tokenizer("char")
    with pytest.raises(ValueError, match="the text is empty; the viewer needs at least one token"):
        viz.visualise(model("gru", tok), tok, "")
    words = saved(tmp_path / "word", kind="word")
    blank = tmp_path / "blank.txt"
    blank.write_text("   \t  ", encoding="utf-8")
    result = invoke("viz", words, "--text", blank, "--out", tmp_path / "v.html")
    assert result.exit_code == 2
    assert "the text holds no word tokens" in result.output


def test_out_refuses_an_existing_file_and_a_folder(run, tmp_path):
    folder, text = run
    existing = tmp_path / "old.html"
    existing.write_text("keep", encoding="utf-8")
    result = invoke("viz", folder, "--text", text, "--out", existing)
    assert result.exit_code == 2
    assert f"--out {str(existing)!r} exists; pass --force to replace it" in result.output
    assert existing.read_text(encoding="utf-8") == "keep"
    result = invoke("viz", folder, "--text", text, "--out", tmp_path)
    assert result.exit_code == 2
    assert f"--out {str(tmp_path)!r} is a folder; name a file" in result.output
    result = invoke("viz", folder, "--text", text, "--json", existing)
    assert result.exit_code == 2 and "--json" in result.output
    result = invoke("viz", folder, "--text", text, "--out", existing, "--force")
    assert result.exit_code == 0, result.output
    assert existing.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
