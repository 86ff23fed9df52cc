"""Several processes under torchrun (gloo, CPU), end to end on the real command line.

- 2 processes with global batch B take the same steps as 1 process with batch B: the same
  loss at every step within ``LOSS_RTOL`` (the gradients are summed in another order), for
  the language model (each rank its own streams) and for a padded task (classify);
- a data set whose last batch is smaller than the world size (an empty share) finishes;
- a 2-process run stopped and resumed continues exactly (the losses of one run);
- a killed rank: torchrun's elastic restart resumes from last/, with the losses of a run
  never killed;
- two torchrun agents meeting through a c10d rendezvous on 127.0.0.1, as a second
  machine would join.

Slow (each case starts torch in several processes); every subprocess has a hard timeout.
Models are tiny and dropout is off, so one process and two take the same steps.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnkit.tasks.lm import api as lm
from rnnkit.train.metrics import read

pytestmark = pytest.mark.slow

LOSS_RTOL = 1e-5
"""fp32: the summed gradients differ from one process's in the last bits (rounding of
another order of summation), which the optimiser carries forward over a few steps; a
real difference (a wrong share, a wrong weighting) moves the loss by 1e-3 or more."""
TIMEOUT = 240  # seconds, per command: nothing may hang CI
ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "RNNKIT_RAISE_BUGS": "1"}
TEXT = lm.default_corpus()[:4000]  # 90 windows an epoch at batch 4 x 10

LM_ARGS = (
    *("train", "lm", "--model.hidden_size", "16", "--model.num_layers", "1"),
    *("--model.embedding_size", "8", "--model.dropout", "0", "--data.batch_size", "4"),
    *("--data.bptt", "10", "--trainer.progress", "false", "--trainer.threads", "1"),
    *("--samples", "0"),
)
CLASSIFY_ARGS = (
    *("train", "classify", "--model.hidden_size", "12", "--model.embedding_size", "8"),
    *("--model.dropout", "0", "--data.batch_size", "4", "--optim.lr", "0.03"),
    *("--trainer.progress", "false", "--trainer.threads", "1"),
)
SENTENCES = [
    ("pos", "a great and funny film"),
    ("neg", "a dull and boring film"),
    ("pos", "great acting , great story"),
    ("neg", "boring , dull , long"),
    ("pos", "funny and great"),
    ("neg", "dull story"),
    ("pos", "great"),
]


def _torchrun(*args: str, nproc: int = 2, flags: tuple[str, ...] = ("--standalone",)) -> list[str]:
    return [
        *(sys.executable, "-m", "torch.distributed.run", *flags),
        *("--nproc_per_node", str(nproc), "-m", "rnnkit", *args),
    ]


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _losses(run: Path) -> dict[int, float]:
    """step -> training loss, each step once (a resumed run's log reads as one run)."""
    records = [r for r in read(run / "metrics.jsonl") if r["kind"] == "train"]
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)), f"steps repeated or out of order: {steps}"
    return {r["step"]: r["loss"] for r in records}


def _assert_same_losses(actual: dict[int, float], expected: dict[int, float]) -> None:
    assert actual.keys() == expected.keys()
    for step, loss in expected.items():
        assert abs(actual[step] - loss) <= LOSS_RTOL * abs(loss), (
            f"step {step}: loss {actual[step]!r}, one process {loss!r}"
        )


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _sentences(path: Path, n: int) -> Path:
    lines = [f"{label} {words}\n" for label, words in (SENTENCES * n)[:n]]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_lm_two_processes_take_the_steps_of_one(tmp_path, text):
    args = (*LM_ARGS, "--data.text", str(text), "--trainer.epochs", "2", "--trainer.max_steps")
    one = _run([sys.executable, "-m", "rnnkit", *args, "40", "--trainer.out", "one"], tmp_path)
    two = _run(_torchrun(*args, "40", "--trainer.out", "two"), tmp_path)
    _assert_same_losses(_losses(tmp_path / "two"), _losses(tmp_path / "one"))
    assert len(_losses(tmp_path / "one")) == 40
    # rank 0 alone speaks, and the run records its world size
    assert two.stdout.count("training a 1x16 gru") == 1, two.stdout
    assert one.stdout.count("trained 40 steps") == two.stdout.count("trained 40 steps") == 1
    config = json.loads((tmp_path / "two" / "last" / "config.json").read_text())
    assert config["meta"]["world_size"] == 2
    assert all(r["world_size"] == 2 for r in read(tmp_path / "two" / "metrics.jsonl"))
    # every rank's RNG and carried state are in the checkpoint
    from safetensors.torch import load_file

    state = load_file(tmp_path / "two" / "last" / "state.safetensors")
    assert {"rng.torch", "rank1.rng.torch", "carry", "rank1.carry"} <= state.keys()
    assert state["carry"].shape[1] == state["rank1.carry"].shape[1] == 2  # 4 streams, 2 each


def test_classify_two_processes_take_the_steps_of_one(tmp_path):
    examples = 13  # the last batch of 4 has 1 row: rank 0's share is empty
    data = _sentences(tmp_path / "train.txt", examples)
    args = (*CLASSIFY_ARGS, "--train", str(data), "--valid", str(data), "--trainer.epochs", "3")
    _run([sys.executable, "-m", "rnnkit", *args, "--trainer.out", "one"], tmp_path)
    _run(_torchrun(*args, "--trainer.out", "two"), tmp_path)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == 3 * -(-examples // 4)  # every batch, the last one too
    _assert_same_losses(two, one)
    reports = [json.loads((tmp_path / r / "report.json").read_text()) for r in ("one", "two")]
    assert reports[0]["confusion"] == reports[1]["confusion"]


CONLL = """Peter I-PER
visited O
Paris I-LOC
. O

John I-PER
went O
to O
London I-LOC

EU I-ORG
rejects O
German I-MISC
call O
"""


def _task_args(task: str, tmp_path: Path) -> tuple[str, ...]:
    """A tiny run of ``task`` whose last batch is smaller than 2 (an empty share)."""
    small = ("--trainer.progress", "false", "--trainer.threads", "1", "--model.hidden_size", "8")
    if task == "tag":
        (tmp_path / "train.conll").write_text(CONLL)
        files = ("--train", "train.conll", "--valid", "train.conll")
        return ("train", "tag", *files, "--data.batch_size", "2", "--model.dropout", "0", *small)
    if task == "seq2seq":
        dates = ("--data.dates", "25", "--data.dates_valid", "4", "--data.dates_test", "4")
        sizes = ("--model.embedding_size", "8", "--model.attention_size", "8")
        sizes += ("--data.batch_size", "8")
        return ("train", "seq2seq", *dates, *sizes, "--model.dropout", "0", *small)
    if task == "music":
        rolls = [[[60 + (t * k) % 12, 67] for t in range(8)] for k in range(1, 8)]
        splits = {"train": rolls[:5], "valid": rolls[5:]}
        (tmp_path / "chorales.json").write_text(json.dumps(splits))
        notes = ("--model.low", "55", "--model.high", "80", "--data.batch_size", "2")
        return ("train", "music", "--data", "chorales.json", *notes, *small)
    t = range(121)
    rows = [f"{i},{10 + 3 * math.sin(2 * math.pi * i / 12) + 0.05 * i:.6f}" for i in t]
    (tmp_path / "s.csv").write_text("time,a\n" + "\n".join(rows) + "\n")
    shape = ("--model.window", "12", "--model.horizon", "3", "--data.batch_size", "16")
    return ("train", "forecast", "--csv", "s.csv", *shape, "--data.season", "12", *small)


@pytest.mark.parametrize("task", ["tag", "seq2seq", "music", "forecast"])
def test_every_task_trains_on_two_processes(tmp_path, task):
    """The other tasks take the steps of one process too (an empty share included), and
    rank 0 alone writes their reports."""
    args = (*_task_args(task, tmp_path), "--trainer.epochs", "2")
    _run([sys.executable, "-m", "rnnkit", *args, "--trainer.out", "one"], tmp_path)
    two = _run(_torchrun(*args, "--trainer.out", "two"), tmp_path)
    _assert_same_losses(_losses(tmp_path / "two"), _losses(tmp_path / "one"))
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
    assert two.stdout.count("training a") + two.stdout.count("forecasting") == 1, two.stdout


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> tuple[Path, dict[int, float]]:
    """An uninterrupted 2-process LM run of 2 epochs -> (its text, its losses): what the
    resumed and the restarted runs must reproduce."""
    folder = tmp_path_factory.mktemp("whole")
    text = folder / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    args = (*LM_ARGS, "--data.text", str(text), "--trainer.epochs", "2")
    _run(_torchrun(*args, "--trainer.out", "run"), folder)
    return text, _losses(folder / "run")


def test_two_processes_resume_exactly(tmp_path, whole):
    text, whole_losses = whole
    args = (*LM_ARGS, "--data.text", str(text), "--trainer.epochs", "2")
    _run(_torchrun(*args, "--trainer.max_steps", "120", "--trainer.out", "part"), tmp_path)
    assert max(_losses(tmp_path / "part")) == 120  # stopped inside the second epoch
    shutil.copytree(tmp_path / "part", tmp_path / "alone")
    resume = ("train", "lm", "--resume", "part", "--trainer.max_steps", "none", "--samples", "0")
    _run(_torchrun(*resume), tmp_path)
    assert _losses(tmp_path / "part") == whole_losses  # bit for bit: the same sums

    # One process resumes a run of two from the same step and position in the epoch,
    # with a notice: the streams it carried state for were split in two.
    resume = ("train", "lm", "--resume", "alone", "--trainer.max_steps", "none", "--samples", "0")
    alone = _run([sys.executable, "-m", "rnnkit", *resume], tmp_path)
    assert "written by 2 process(es) and resumes with 1" in alone.stderr, alone.stderr
    assert "carried recurrent state starts afresh" in alone.stderr
    losses = _losses(tmp_path / "alone")
    assert list(losses) == list(whole_losses)  # every step once, to the end of epoch 2
    assert all(losses[s] == whole_losses[s] for s in range(1, 121))


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def test_elastic_restart_after_a_killed_rank_resumes_from_last(tmp_path, whole):
    text, whole_losses = whole
    args = (*LM_ARGS, "--data.text", str(text), "--trainer.epochs", "2")
    args += ("--trainer.checkpoint_every", "1")
    flags = ("--standalone", "--max-restarts", "1", "--monitor-interval", "0.2")
    job = subprocess.Popen(
        _torchrun(*args, "--trainer.out", "killed", flags=flags),
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        log, deadline = tmp_path / "killed" / "metrics.jsonl", time.monotonic() + TIMEOUT
        while not (log.is_file() and len(log.read_text().splitlines()) >= 30):
            assert job.poll() is None and time.monotonic() < deadline, "no steps before the kill"
            time.sleep(0.05)
        workers = sorted(_children(job.pid))
        assert len(workers) == 2, workers
        os.kill(workers[-1], signal.SIGKILL)  # rank 1 (started second)
        out, err = job.communicate(timeout=TIMEOUT)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 0, out[-3000:] + err[-3000:]
    assert out.count("resuming") == 1, out
    assert [p.name for p in tmp_path.iterdir()] == ["killed"]  # resumed in its own folder
    assert _losses(tmp_path / "killed") == whole_losses  # bit for bit


def test_ctrl_c_stops_every_rank_after_a_step_with_a_checkpoint(tmp_path, text):
    """Ctrl-C reaches torchrun and its workers (one process group, as in a terminal); the
    agent adds SIGINT and SIGTERM of its own: every rank stops after the same step and
    rank 0 writes last/ there."""
    args = (*LM_ARGS, "--data.text", str(text), "--trainer.epochs", "20", "--trainer.out", "run")
    job = subprocess.Popen(
        _torchrun(*args),
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        log, deadline = tmp_path / "run" / "metrics.jsonl", time.monotonic() + TIMEOUT
        while not (log.is_file() and len(log.read_text().splitlines()) >= 20):
            assert job.poll() is None and time.monotonic() < deadline, "no steps before Ctrl-C"
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGINT)
        out, err = job.communicate(timeout=TIMEOUT)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert "interrupted at step" in out, out + err[-3000:]
    step = int(out.split("interrupted at step ")[1].split(";")[0])
    state = json.loads((tmp_path / "run" / "last" / "state.json").read_text())
    assert state["step"] == step >= 20 and max(_losses(tmp_path / "run")) == step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_c10d_rendezvous_of_two_machines_on_localhost(tmp_path, text):
    """Two torchrun agents (one process each) meet at a c10d endpoint, as two machines
    would: the job takes the steps of one process."""
    args = (*LM_ARGS, "--data.text", str(text), "--trainer.epochs", "1")
    args += ("--trainer.max_steps", "20", "--trainer.out")
    _run([sys.executable, "-m", "rnnkit", *args, "one"], tmp_path)
    endpoint = f"127.0.0.1:{_free_port()}"
    flags = ("--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint)
    flags += ("--rdzv-id", f"test-{os.getpid()}")
    nodes = [
        subprocess.Popen(
            _torchrun(*args, "two", nproc=1, flags=flags),
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        results = [node.communicate(timeout=TIMEOUT) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    for node, (out, err) in zip(nodes, results, strict=True):
        assert node.returncode == 0, out[-3000:] + err[-3000:]
    _assert_same_losses(_losses(tmp_path / "two"), _losses(tmp_path / "one"))
    assert not (tmp_path / "two-2").exists()  # one run folder, claimed by rank 0


def test_an_error_on_rank_0_is_one_line_and_no_rank_hangs(tmp_path):
    """Bad input found by rank 0 while the others wait for it (reading the corpus): one
    line from rank 0, the others exit quietly, and the job ends (within the timeout)."""
    missing = tmp_path / "missing.txt"
    command = _torchrun(*LM_ARGS, "--data.text", str(missing), "--trainer.out", "run")
    result = subprocess.run(
        command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error: " in line]
    assert len(errors) == 1 and str(missing) in errors[0], result.stderr[-3000:]
    assert not (tmp_path / "run").exists()  # the failed start leaves no run folder
