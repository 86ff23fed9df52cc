"""`rnnkit train lm`, `rnnkit sample`, `rnnkit eval` end to end on a few KB of text,
and the clear errors that bad input gets."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.lm import api as lm

TEXT = lm.default_corpus()[:2500]
TINY = [
    "--model.hidden_size",
    "16",
    "--model.num_layers",
    "1",
    "--model.embedding_size",
    "8",
    "--data.batch_size",
    "8",
    "--data.bptt",
    "16",
    "--trainer.progress",
    "false",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    text = root / "input.txt"
    text.write_text(TEXT, encoding="utf-8")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    result = invoke(
        "train",
        "lm",
        "--text",
        text,
        *TINY,
        "--trainer.epochs",
        "1",
        "--trainer.out",
        root / "run",
        "--samples",
        "2",
        "--sample.max_tokens",
        "40",
    )
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return root, result.output


def test_train_prints_progress_samples_and_next_commands(trained):
    root, output = trained
    assert "epoch 1 step" in output and "bpc" in output
    assert output.count("--- sample") == 2
    assert f"rnnkit sample {root / 'run'}" in output
    assert (root / "run" / "best" / "model.safetensors").is_file()


def test_sample_streams_and_is_reproducible(trained):
    root, _ = trained
    args = ("sample", root / "run", "--prime", "The ", "--max-tokens", "30", "--top-k", "5")
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == 0, first.output
    assert first.output.startswith("The ") and first.output == second.output
    many = invoke("sample", root / "run", "-n", "3", "--max-tokens", "10", "--top-p", "0.9")
    assert many.exit_code == 0 and many.output.count("--- sample") == 3


def test_eval_reports_bits_per_character(trained):
    root, _ = trained
    result = invoke("eval", root / "run", "--text", root / "input.txt", "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert 0 < figures["loss"] < 5 and figures["bits_per_token"] == pytest.approx(
        figures["loss"] / 0.6931471805599453
    )
    text = invoke("eval", root / "run", "--text", root / "input.txt")
    assert "bits per character" in text.output and "perplexity" in text.output
    positional = invoke("eval", root / "run", root / "input.txt", "--json")  # as every task
    assert json.loads(positional.output) == figures
    assert figures["tokenizer"] == "char" and figures["unit"] == "character"


def test_resume_continues_the_run(trained):
    root, _ = trained
    result = invoke(
        "train", "lm", "--resume", root / "run", "--trainer.epochs", "2", "--samples", "0"
    )
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "epoch 2 step" in result.output


def test_unknown_prime_character_is_an_error_before_any_output(trained):
    root, _ = trained
    result = invoke("sample", root / "run", "--prime", "naïve ☃")
    assert result.exit_code == 2
    assert result.output.startswith("error: the prime text has")
    assert "'☃'" in result.output


def test_help_shows_defaults():
    result = invoke("train", "lm", "--help")
    assert result.exit_code == 0
    assert "--model.hidden_size 256" in result.output and "--optim.lr 0.002" in result.output
    assert "[default: 0.8]" in invoke("sample", "--help").output


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        (b"caf\xe9 au lait\n" * 20, "give it, e.g. --data.encoding latin-1"),
        (b"aaaa aaaa\n" * 20, "vocabulary of 1 token"),
    ],
    ids=["missing", "empty", "binary", "latin-1", "one-token"],
)
def test_bad_training_text_gets_a_clear_error(tmp_path, content, message):
    path = tmp_path / "input.txt"
    if content is not None:
        path.write_bytes(content)
    args = ("train", "lm", "--text", path, *TINY, "--trainer.out", tmp_path / "run")
    if content is not None and b"aaaa" in content:
        args = (*args, "--data.tokenizer", "word")
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert "Traceback" not in result.output


def test_bad_override_and_missing_checkpoint(tmp_path):
    result = invoke("train", "lm", "--model.hiden_size", "8")
    assert result.exit_code == 2 and "model has no field 'hiden_size'" in result.output
    result = invoke("sample", tmp_path / "nowhere")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_python_api_loads_and_samples(trained):
    from rnnkit.decoding.sampling import SampleConfig, sample

    root, _ = trained
    model, tokenizer, config = lm.load(root / "run")
    assert config.model.hidden_size == 16 and not model.training
    texts = sample(model, tokenizer, SampleConfig(prime="The ", max_tokens=20, num_samples=2))
    assert len(texts) == 2 and all(0 < len(t) <= 20 for t in texts)


def test_encoding_flag_reads_latin_1(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café au lait, crème brûlée.\n".encode("latin-1") * 20)
    result = invoke(
        "train",
        "lm",
        "--text",
        path,
        "--encoding",
        "latin-1",
        *TINY,
        "--trainer.max_steps",
        "2",
        "--samples",
        "0",
        "--trainer.out",
        tmp_path / "run",
    )
    assert result.exit_code == 0, result.output


def test_diagnose_a_language_model_on_a_text(trained, tmp_path):
    root, _ = trained
    out = tmp_path / "diag"
    text = 'print("a") and print("b")'
    result = invoke("diagnose", "--lm", root / "run", "--text", text, "--out", out)
    assert result.exit_code == 0, result.output
    numbers = json.loads((out / "numbers.json").read_text())
    model, tokenizer, _ = lm.load(root / "run")
    steps = len(tokenizer.encode(text)) - 1
    assert numbers["tokens"] == steps
    assert len(numbers["gradient_norms"]["layer 0"]) == steps
    assert len(numbers["jacobian_norms"]) == steps
    for name in ("gradient_flow.png", "jacobian.png", "heatmap.png"):
        assert (out / name).stat().st_size > 0
    # The default heat-map units are the ones whose state varies most over the text.
    from rnnkit.diagnostics import unroll

    ids = torch.tensor(tokenizer.encode(text)[:-1])[:, None]
    with torch.no_grad():
        h = torch.stack(unroll(model.rnn, model.embedding(ids)).hidden(0))[:, 0]
    assert set(numbers["heatmap_units"]) == set(h.var(0).argsort(descending=True)[:8].tolist())


def test_diagnose_a_language_model_needs_a_usable_text(trained, tmp_path):
    root, _ = trained
    missing = invoke("diagnose", "--lm", root / "run", "--out", tmp_path)
    assert missing.exit_code == 2 and "--lm needs --text" in missing.output
    short = invoke("diagnose", "--lm", root / "run", "--text", "a", "--out", tmp_path)
    assert short.exit_code == 2 and "at least 2" in short.output
    units = invoke(
        "diagnose", "--lm", root / "run", "--text", "ab", "--units", "99", "--out", tmp_path
    )
    assert units.exit_code == 2 and "out of range for hidden size 16" in units.output
    nofile = invoke(
        "diagnose", "--lm", root / "run", "--text", f"@{tmp_path}/none.txt", "--out", tmp_path
    )
    assert nofile.exit_code == 2 and "cannot read the --text file" in nofile.output
