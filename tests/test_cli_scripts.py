"""The reproduction scripts run end to end on the shared data (tiny model, two steps)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--model.hidden_size",
    "8",
    "--model.embedding_size",
    "8",
    "--model.num_layers",
    "1",
    "--trainer.max_steps",
    "2",
    "--trainer.progress",
    "false",
    "--samples",
    "1",
    "--sample.max_tokens",
    "5",
    "--trainer.threads",
    "1",
]


def run_script(script: str, data: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {
        "RNNKIT_DATA": str(data),
        "RNNKIT": f"{sys.executable} -m rnnkit",
        "PYTHONPATH": str(ROOT / "src"),
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / script), *args, *TINY, "--trainer.out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_ptb_script(shared_data, tmp_path):
    result = run_script("ptb.sh", shared_data, tmp_path / "ptb", "gru_reset_before")
    assert result.returncode == 0, result.stderr
    assert "1x8 gru_reset_before" in result.stdout and "vocabulary 10002" in result.stdout
    assert "stopped (max_steps) at step 2" in result.stdout and "ppl" in result.stdout


def test_tinyshakespeare_script(shared_data, tmp_path):
    # A time cap far above what two steps take, so the step cap always ends the run (with
    # "1" minute a loaded machine hit the time cap first).
    result = run_script(
        "tinyshakespeare.sh", shared_data, tmp_path / "ts", "60", "--data.valid_fraction", "0.01"
    )
    assert result.returncode == 0, result.stderr
    assert "1,104,240 training" in result.stdout and "vocabulary 69" in result.stdout
    assert "bpc" in result.stdout and "--trainer.max_steps none" in result.stdout


def test_scripts_name_missing_data(tmp_path):
    result = run_script("ptb.sh", tmp_path, tmp_path / "x")
    assert result.returncode == 2 and "ptb.train.txt not found" in result.stderr


def test_sst2_script(shared_data, tmp_path):
    env = os.environ | {
        "RNNKIT_DATA": str(shared_data),
        "RNNKIT": f"{sys.executable} -m rnnkit",
        "PYTHONPATH": str(ROOT / "src"),
    }
    args = [
        "--model.hidden_size",
        "8",
        "--model.embedding_size",
        "8",
        "--trainer.max_steps",
        "2",
        "--trainer.progress",
        "false",
        "--trainer.threads",
        "1",
        "--trainer.out",
        str(tmp_path / "sst2"),
    ]
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "sst2.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "on 6,920 sentences (872 validation), 2 labels" in result.stdout
    assert "stopped (max_steps) at step 2" in result.stdout and ", accuracy " in result.stdout


def test_sst2_pretrained_script(shared_data, tmp_path):
    # The whole pipeline at toy size: the corpora, both language models, the classifier.
    lm_dir = tmp_path / "lm"
    env = os.environ | {
        "RNNKIT_DATA": str(shared_data),
        "RNNKIT": f"{sys.executable} -m rnnkit",
        "PYTHONPATH": str(ROOT / "src"),
        "SST2_LM_DIR": str(lm_dir),
        "SST2_LM_ARGS": "--model.hidden_size 8 --model.embedding_size 8 "
        "--trainer.max_steps 2 --data.eval_batch_size 512 --samples 0",
    }
    args = [
        "--model.hidden_size",
        "8",
        "--model.embedding_size",
        "8",
        "--trainer.max_steps",
        "2",
        "--trainer.progress",
        "false",
        "--trainer.threads",
        "1",
        "--trainer.out",
        str(tmp_path / "sst2"),
    ]
    command = ["bash", str(ROOT / "scripts" / "sst2_pretrained.sh"), *args]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "1,070,064 training" in result.stdout  # the forward and the backward corpus
    assert result.stdout.count("1,070,064 training") == 2
    forward = (lm_dir / "corpus.txt").read_text().split()
    backward = (lm_dir / "corpus.reversed.txt").read_text().split()
    assert backward == forward[::-1]
    assert "forward direction of layer(s) 0; embeddings of " in result.stdout
    assert "backward direction of layer(s) 0" in result.stdout
    assert "stopped (max_steps) at step 2" in result.stdout and ", accuracy " in result.stdout

    # A second call resumes the finished language models, which trains nothing more.
    def train_lines() -> list[list[str]]:
        return [
            [
                line
                for line in (lm_dir / d / "metrics.jsonl").read_text().splitlines()
                if '"kind": "train"' in line
            ]
            for d in ("fwd", "bwd")
        ]

    steps = train_lines()
    assert all(len(lines) == 2 for lines in steps)
    again = subprocess.run(
        [*command[:-1], str(tmp_path / "sst2-again")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert f"resuming the language model in {lm_dir}/fwd" in again.stdout
    assert train_lines() == steps
