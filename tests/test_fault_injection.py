"""Fault injection on the real command line (slow: each case starts several processes).

- kill -9 at random moments of a run and of its resume: every checkpoint left is
  loadable, no temporary is left after the resume, ``metrics.jsonl`` has every step once,
  and the losses and final weights equal those of a run that was never interrupted;
- two runs started together on one ``--trainer.out`` get two folders; two resumes of one
  run: the second is refused with one line while the first trains;
- hostile run folders (damaged, oversized or linked files): one line, exit 2, no file
  outside the folder touched, and the peak memory of the refusal (``ru_maxrss`` of the
  child; ``RLIMIT_AS`` would break ``import torch``) close to that of loading a good
  checkpoint.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnnkit.tasks.lm import api as lm
from rnnkit.train import checkpoint as ckpt
from rnnkit.train.metrics import read
from test_checkpoint_safety import DAMAGE

pytestmark = pytest.mark.slow

TEXT = lm.default_corpus()[:6000]
ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _args(text: Path, out: Path, *extra: str) -> list[str]:
    return [
        *("train", "lm", "--data.text", str(text), "--model.hidden_size", "16"),
        *("--model.num_layers", "1", "--model.embedding_size", "8", "--data.batch_size", "4"),
        *("--data.bptt", "10", "--trainer.epochs", "3", "--trainer.progress", "false"),
        *("--trainer.checkpoint_every", "1", "--trainer.threads", "1", "--samples", "0"),
        *("--trainer.out", str(out)),
        *extra,
    ]


def _rnnkit(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnkit", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> tuple[Path, float]:
    """An uninterrupted run, and how long it took from start to exit."""
    out = tmp_path_factory.mktemp("reference") / "run"
    start = time.perf_counter()
    code, _, err = _finish(_rnnkit(*_args(corpus, out)))
    assert code == 0, err
    return out, time.perf_counter() - start


def _losses(run: Path) -> dict[int, float]:
    steps = [r for r in read(run / "metrics.jsonl") if r["kind"] == "train"]
    assert len(steps) == len({r["step"] for r in steps}), "a step logged twice"
    return {r["step"]: r["loss"] for r in steps}


def _check_after_kill(run: Path) -> bool:
    """The invariants right after a kill -9 -> whether a checkpoint exists to resume."""
    names = set(os.listdir(run))
    if not names & {"last", "last.previous", "best", "best.previous"}:
        return False  # killed before the first checkpoint: only leftovers, taken over later
    lm.load(run, which="last")  # loadable, with its checksums (a Notice would be an error)
    return True


def _kill_at(process: subprocess.Popen, seconds: float) -> None:
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
    process.communicate()


@pytest.mark.filterwarnings("error::rnnkit.common.notices.Notice")
@pytest.mark.parametrize("seed", range(8))
def test_kill_9_at_random_moments_loses_nothing(seed, corpus, reference, tmp_path):
    ref_run, seconds = reference
    rng = random.Random(seed)
    out = tmp_path / "run"
    _kill_at(_rnnkit(*_args(corpus, out)), rng.uniform(0.5, seconds))
    if not out.exists() or not _check_after_kill(out):
        code, _, err = _finish(_rnnkit(*_args(corpus, out)))  # takes the leftovers over
        assert code == 0, err
    else:
        _kill_at(_rnnkit("train", "lm", "--resume", str(out)), rng.uniform(0.5, seconds))
        assert _check_after_kill(out)
        code, _, err = _finish(_rnnkit("train", "lm", "--resume", str(out)))
        assert code == 0, err
    assert not (tmp_path / "run-2").exists()
    assert not [n for n in os.listdir(out) if ".tmp-" in n or n.endswith(".previous")]
    assert _losses(out) == _losses(ref_run)
    assert sorted(_losses(out)) == list(range(1, len(_losses(out)) + 1))
    for name in ("best", "last"):
        mine = load_file(out / name / ckpt.MODEL_FILE)
        theirs = load_file(ref_run / name / ckpt.MODEL_FILE)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), name


def test_two_runs_started_together_get_two_folders(corpus, reference, tmp_path):
    ref_run, _ = reference
    out = tmp_path / "run"
    first, second = _rnnkit(*_args(corpus, out)), _rnnkit(*_args(corpus, out))
    results = [_finish(first), _finish(second)]
    assert [code for code, _, _ in results] == [0, 0], results
    folders = sorted(
        line.rsplit("run in ", 1)[1]
        for _, text, _ in results
        for line in text.splitlines()
        if "; run in " in line
    )
    assert folders == [str(out), str(tmp_path / "run-2")]
    for folder in folders:
        assert _losses(Path(folder)) == _losses(ref_run)


def test_a_second_resume_of_a_run_in_training_is_refused(corpus, tmp_path):
    out = tmp_path / "run"
    code, _, err = _finish(_rnnkit(*_args(corpus, out, "--trainer.max_steps", "5")))
    assert code == 0, err
    longer = ("--trainer.epochs", "30", "--trainer.max_steps", "100000")
    first = _rnnkit("train", "lm", "--resume", str(out), *longer)
    assert first.stdout is not None
    while "resuming" not in first.stdout.readline():  # it holds the lock from here on
        assert first.poll() is None
    code, text, err = _finish(_rnnkit("train", "lm", "--resume", str(out)))
    first.kill()
    first.communicate()
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "in use by another process" in err
    assert text == ""


def _peak_rss_mb(*args: str) -> tuple[int, str, float]:
    """(exit code, stderr, peak resident memory in MB) of ``rnnkit ARGS``."""
    with open(os.devnull, "w") as null:
        process = subprocess.Popen(
            [sys.executable, "-m", "rnnkit", *args],
            env=ENV,
            stdout=null,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stderr is not None
        err = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, err, usage.ru_maxrss / 1024


@pytest.fixture(scope="module")
def trained_and_baseline(reference) -> tuple[Path, float]:
    """The reference run and the peak memory of sampling from its best checkpoint."""
    run, _ = reference
    code, err, peak = _peak_rss_mb("sample", str(run / "best"), "--max-tokens", "5")
    assert code == 0, err
    return run, peak


@pytest.mark.parametrize("damage, message", DAMAGE, ids=[d.__name__[1:] for d, _ in DAMAGE])
def test_a_hostile_checkpoint_is_refused_in_bounded_memory(
    damage, message, trained_and_baseline, tmp_path
):
    run, baseline = trained_and_baseline
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    damage(copy / "best")
    code, err, peak = _peak_rss_mb("sample", str(copy / "best"), "--max-tokens", "5")
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert peak < baseline + 100, f"{peak:.0f} MB against {baseline:.0f} MB for a good one"


def _link_last(run: Path, outside: Path) -> Path:
    shutil.copytree(run / "last", outside)
    shutil.rmtree(run / "last")
    (run / "last").symlink_to(outside)
    return outside / ckpt.MODEL_FILE


def _link_metrics(run: Path, outside: Path) -> Path:
    outside.write_text("precious\n")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(outside)
    return outside


def _link_lock(run: Path, outside: Path) -> Path:
    outside.write_text("precious\n")
    (run / "run.lock").unlink()
    (run / "run.lock").symlink_to(outside)
    return outside


@pytest.mark.parametrize("link", [_link_last, _link_metrics, _link_lock])
def test_a_resume_never_writes_through_a_link(link, reference, tmp_path):
    run, _ = reference
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    victim = link(copy, tmp_path / "outside")
    before = victim.read_bytes()
    code, _, err = _finish(_rnnkit("train", "lm", "--resume", str(copy), "--trainer.epochs", "4"))
    assert code == 2, err
    assert err.count("\n") == 1 and "symbolic link" in err, err
    assert victim.read_bytes() == before
