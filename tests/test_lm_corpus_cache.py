"""The language model's token-id cache in the run folder: built, reused on resume,
rebuilt when the text changes; and the memory a big corpus costs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnkit.tasks.lm import api as lm

ROOT = Path(__file__).resolve().parents[1]
TEXT = lm.default_corpus()[:3000]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(tmp_path: Path, *extra: str):
    path = tmp_path / "tiny.txt"
    if not path.exists():
        path.write_text(TEXT, encoding="utf-8")
    base = (
        "--data.text", str(path),
        "--model.hidden_size", "8", "--model.num_layers", "1", "--model.embedding_size", "8",
        "--data.batch_size", "4", "--data.bptt", "12",
        "--trainer.progress", "false", "--trainer.out", str(tmp_path / "run"),
    )  # fmt: skip
    return lm.configure(overrides=(*base, *extra))


def inode(path: Path) -> int:
    return os.stat(path).st_ino


def test_training_maps_the_ids_from_the_run_folder_and_resume_reuses_them(tmp_path):
    run = lm.train(tiny(tmp_path, "--trainer.max_steps", "2"), log=str)
    cache = run.out_dir / lm.CACHE_DIR / "train.ids"
    record = json.loads(cache.with_name("train.ids.json").read_text())
    assert record["dtype"] == "uint8"
    assert record["count"] == len(TEXT) == run.train_tokens + run.valid_tokens
    ids = np.fromfile(cache, dtype=np.uint8)
    assert ids.tolist() == run.tokenizer.encode(TEXT)
    built = inode(cache)

    resumed = lm.train(resume=run.out_dir, changes={"trainer": {"max_steps": 4}}, log=str)
    assert resumed.result.step == 4
    assert inode(cache) == built  # reused

    (tmp_path / "tiny.txt").write_text(TEXT[:2000], encoding="utf-8")  # the text changed
    again = lm.train(resume=run.out_dir, changes={"trainer": {"max_steps": 5}}, log=str)
    assert inode(cache) != built  # rebuilt from the new text
    assert again.train_tokens + again.valid_tokens == 2000


def test_the_validation_text_is_cached_too(tmp_path):
    valid = tmp_path / "valid.txt"
    valid.write_text(TEXT[:500], encoding="utf-8")
    run = lm.train(
        tiny(tmp_path, "--data.valid_text", str(valid), "--trainer.max_steps", "1"), log=str
    )
    cache = run.out_dir / lm.CACHE_DIR
    assert sorted(p.name for p in cache.iterdir()) == [
        "train.ids",
        "train.ids.json",
        "valid.ids",
        "valid.ids.json",
    ]
    assert run.valid_tokens == 500
    assert np.fromfile(cache / "valid.ids", np.uint8).tolist() == run.tokenizer.encode(TEXT[:500])


def test_load_corpus_without_a_cache_dir_stays_in_memory(tmp_path):
    sections = tiny(tmp_path)
    tokenizer, train, valid = lm.load_corpus(sections.data)
    assert type(train) is np.ndarray and type(valid) is np.ndarray
    assert train.dtype == valid.dtype == np.uint8
    assert np.concatenate([train, valid]).tolist() == tokenizer.encode(TEXT)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_big_corpus_costs_at_most_two_bytes_a_character(tmp_path):
    # peak RSS of training on 60 MB of text minus that on 64 kB, per character
    script = ROOT / "scripts" / "lm_corpus_memory.py"
    out = subprocess.run(
        [sys.executable, str(script), "--mb", "60", "--dir", str(tmp_path / "work")],
        env=os.environ | {"PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["chars"] == 60_000_000
    assert figures["cache_bytes_per_char"] == 1.0  # uint8 ids
    assert figures["bytes_per_char"] <= 2.0, figures
