"""A bad argument to any command is refused before any work: a non-zero exit, one line on
stderr that names the flag (or the config field) and no traceback, and nothing written.

Every case runs in an empty folder, and the runs named (``RUN``) do not exist: an argument
checked only after loading a model or reading data would fail on the missing run instead,
without naming the flag, and so fail here."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rnnkit.cli import app

RUN = "no-run"

CASES: list[tuple[list[str], str]] = [  # (argv, what the one line must name)
    # training settings, shared by every task (TrainerConfig, OptimConfig)
    (["train", "lm", "--trainer.clip_norm", "-1"], "--trainer.clip_norm must be > 0 (or none)"),
    (["train", "lm", "--trainer.clip_norm", "0"], "--trainer.clip_norm"),
    (["train", "lm", "--trainer.clip_value", "-1"], "--trainer.clip_value"),
    (["train", "lm", "--trainer.max_steps", "0"], "--trainer.max_steps must be >= 1"),
    (["train", "lm", "--trainer.max_steps", "-5"], "--trainer.max_steps"),
    (["train", "lm", "--trainer.max_minutes", "-1"], "--trainer.max_minutes"),
    (["train", "lm", "--trainer.epochs", "0"], "--trainer.epochs"),
    (["train", "lm", "--trainer.threads", "100000"], "--trainer.threads must be <="),
    (["train", "lm", "--trainer.average", "1"], "--trainer.average"),
    (["train", "lm", "--trainer.seed", "-1"], "--trainer.seed"),
    (["train", "lm", "--optim.lr", "0"], "--optim.lr must be in (0, 100]"),
    (["train", "lm", "--optim.lr", "1e38"], "--optim.lr"),
    (["train", "lm", "--optim.lr", "nan"], "--optim.lr must be float"),
    (["train", "lm", "--optim.momentum", "1"], "--optim.momentum"),
    (["train", "lm", "--optim.decay", "0"], "--optim.decay"),
    (["train", "lm", "--optim.min_lr", "1"], "--optim.min_lr must be <= --optim.lr"),
    # language models
    (["train", "lm", "--data.bptt", "0"], "--data.bptt"),
    (["train", "lm", "--data.batch_size", "-3"], "--data.batch_size"),
    (["train", "lm", "--data.valid_fraction", "1"], "--data.valid_fraction"),
    (["train", "lm", "--model.dropout", "1"], "--model.dropout must be in [0, 1)"),
    (["train", "lm", "--model.tie_weights"], "--model.tie_weights"),
    (["train", "lm", "--sample.temperature", "0"], "--sample.temperature"),
    (["train", "lm", "--samples", "-1"], "--samples must be >= 0"),
    (["train", "lm", "--resume", RUN, "--trainer.clip_norm", "-1"], "--trainer.clip_norm"),
    # the other tasks
    (["train", "classify", "--data.batch_size", "0"], "--data.batch_size"),
    (["train", "classify", "--data.word_dropout", "1"], "--data.word_dropout"),
    (["train", "classify", "--model.dropout", "-0.1"], "--model.dropout"),
    (["train", "tag", "--data.singleton_unk", "2"], "--data.singleton_unk"),
    (["train", "tag", "--data.token_column", "-1"], "--data.token_column"),
    (["train", "tag", "--trainer.clip_norm", "-1"], "--trainer.clip_norm"),
    (["train", "seq2seq", "--model.sampling", "1.5"], "--model.sampling"),
    (["train", "seq2seq", "--decode.beam", "0"], "--decode.beam"),
    (["train", "seq2seq", "--decode.max_length", "0"], "--decode.max_length"),
    (["train", "music", "--model.low", "100", "--model.high", "20"], "--model.low"),
    (["train", "music", "--model.high", "128"], "--model.high"),
    (["train", "forecast", "--data.arima_order", "x,y"], "--data.arima_order must be p,d,q"),
    (["train", "forecast", "--data.arima_order", "1,-1,0"], "--data.arima_order"),
    (
        ["train", "forecast", "--data.valid_fraction", "0.6", "--data.test_fraction", "0.5"],
        "--data.valid_fraction + --data.test_fraction",
    ),
    (["train", "forecast", "--trainer.max_steps", "0"], "--trainer.max_steps"),
    # the verbs on a trained run
    (["sample", RUN, "--num-samples", "0"], "--num-samples"),
    (["sample", RUN, "--max-tokens", "-1"], "--max-tokens"),
    (["sample", RUN, "--temperature", "0"], "--temperature"),
    (["sample", RUN, "--top-p", "2"], "--top-p"),
    (["sample", RUN, "--top-k", "-1"], "--top-k"),
    (["sample", RUN, "--seed", "-1"], "--seed"),
    (["eval", RUN, "text.txt", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["eval", RUN, "text.txt", "--batch-size", "-3"], "--batch-size"),
    (["eval", RUN, "text.txt", "--bptt", "0"], "--bptt"),
    (["predict", RUN], "--file"),
    (["translate", RUN, "a text", "--beam", "0"], "--beam"),
    (["generate", "music", RUN, "--tempo", "0"], "--tempo"),
    (["generate", "music", RUN, "--steps", "0"], "--steps"),
    (["generate", "music", RUN, "--num-samples", "0"], "--num-samples"),
    (["generate", "music", RUN, "--temperature", "0"], "--temperature"),
    (["forecast", RUN, "--csv", "series.csv", "--steps", "-1"], "--steps"),
    (["forecast", RUN, "--csv", "series.csv", "--steps", "0"], "--steps"),
    # the synthetic experiments, the benchmark and the diagnostics (fields named as flags)
    (["experiment", "--task", "nosuch"], "task"),
    (["experiment", "--size", "5"], "size"),
    (["experiment", "--cell", "nosuch"], "cell"),
    (["experiment", "--hidden-size", "0"], "hidden_size"),
    (["experiment", "--batch-size", "0"], "batch_size"),
    (["experiment", "--lr", "-1"], "lr"),
    (["experiment", "--clip", "-1"], "clip"),
    (["experiment", "--recurrent-gain", "-1"], "recurrent_gain"),
    (["experiment", "--gate-init", "nosuch"], "gate_init"),
    (["experiment", "--optimizer", "lbfgs"], "optimizer"),
    (["experiment", "--max-seconds", "-1"], "max_seconds"),
    (["experiment", "--seed", "-1"], "seed"),
    (["bench", "--quick", "--repeats", "0"], "repeats"),
    (["bench", "--quick", "--threads", "100000"], "threads"),
    (["bench", "--quick", "--cells", "nope"], "nope"),
    (["diagnose", "--batch-size", "0"], "--batch-size"),
    (["diagnose", "--units", "x"], "--units"),
    (["diagnose", "--units", "99"], "--units"),
    (["diagnose", "--task", "nosuch"], "task"),
    (["diagnose", "--hidden-size", "0"], "hidden_size"),
    (["diagnose", "--gate-init", "nosuch"], "gate_init"),
    (["diagnose", "--lm", RUN], "--text"),
]


@pytest.mark.parametrize("args, names", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_bad_argument_is_one_line_before_any_work(args, names, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args, input="")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert names in lines[0], lines[0]
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no run folder, no output file


FILE_CASES: list[tuple[dict[str, str], list[str], str]] = [  # (files to make, argv, named)
    ({"out.png": "mine"}, ["translate", RUN, "a text", "--attention", "out.png"], "--force"),
    ({"folder/x": ""}, ["translate", RUN, "a text", "--attention", "folder"], "is a folder"),
    ({"p.json": "[1, 2]"}, ["generate", "music", RUN, "--primer", "p.json"], "p.json"),
    ({"p.json": "5"}, ["generate", "music", RUN, "--primer", "p.json"], "p.json"),
    ({"p.json": '[["a"]]'}, ["generate", "music", RUN, "--primer", "p.json"], "p.json"),
    ({"p.json": "[["}, ["generate", "music", RUN, "--primer", "p.json"], "not valid JSON"),
    ({"runs": "a file"}, ["train", "lm", "--trainer.out", "runs"], "is a file"),
    ({"m.safetensors": "xx"}, ["diagnose", "--model", "m.safetensors"], "damaged"),
]


@pytest.mark.parametrize(
    "files, args, names", FILE_CASES, ids=[" ".join(a) + f" {f}" for f, a, _ in FILE_CASES]
)
def test_a_bad_file_argument_is_one_line_and_touches_nothing(
    files, args, names, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    before = sorted(
        (p.relative_to(tmp_path), p.read_bytes() if p.is_file() else None)
        for p in tmp_path.rglob("*")
    )
    result = CliRunner().invoke(app, args, input="")
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert names in lines[0], lines[0]
    after = sorted(
        (p.relative_to(tmp_path), p.read_bytes() if p.is_file() else None)
        for p in tmp_path.rglob("*")
    )
    assert after == before
