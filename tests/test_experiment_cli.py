"""The experiment driver and the `diagnose` / `experiment` commands, end to end on tiny
settings."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from rnnkit.cli import app, diagnose, experiment  # noqa: F401  (registers the commands)
from rnnkit.synthetic import AgreementTask, make_task
from rnnkit.synthetic.experiment import ExperimentConfig, build_model, run_experiment

runner = CliRunner()


def test_experiment_cli_writes_result_and_pngs(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "experiment",
            "--task",
            "copy",
            "--size",
            "3",
            "--cell",
            "lstm",
            "--hidden-size",
            "4",
            "--batch-size",
            "4",
            "--max-sequences",
            "16",
            "--eval-every",
            "8",
            "--eval-size",
            "8",
            "--clip",
            "0.5",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("result.json", "curve.png", "grad_norms.png", "model.safetensors"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "result.json").read_text())
    assert saved["sequences"] == 16 and saved["stopped"] == "max_sequences"
    assert [e["sequences"] for e in saved["evals"]] == [0, 8, 16]
    assert saved["evals"][-1]["baseline"] == pytest.approx(10 * 2.0794415 / 23)
    assert len(saved["grad_norms"]) == 4
    assert saved["clipped_steps"] == sum(n > 0.5 for n in saved["grad_norms"])

    diag = tmp_path / "diag"
    result = runner.invoke(
        app,
        [
            "diagnose",
            "--model",
            str(out / "model.safetensors"),
            "--batch-size",
            "2",
            "--out",
            str(diag),
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("gradient_flow.png", "jacobian.png", "gates.png", "heatmap.png"):
        assert (diag / name).stat().st_size > 0, name
    numbers = json.loads((diag / "numbers.json").read_text())
    assert len(numbers["gradient_norms"]["layer 0"]) == 3 + 20
    assert set(numbers["saturated"]) == {"i", "f", "o"}


@pytest.mark.parametrize("task", ["adding", "agreement"])
def test_diagnose_cli_on_a_fresh_model(tmp_path, task):
    result = runner.invoke(
        app,
        [
            "diagnose",
            "--task",
            task,
            "--size",
            "10" if task == "adding" else "2",
            "--cell",
            "rnn_tanh",
            "--hidden-size",
            "3",
            "--batch-size",
            "2",
            "--num-layers",
            "2",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "gradient_flow.png").exists() and (tmp_path / "heatmap.png").exists()
    assert not (tmp_path / "gates.png").exists()  # a tanh RNN has no gates
    assert "layer 1" in json.loads((tmp_path / "numbers.json").read_text())["gradient_norms"]


def test_clipping_bounds_the_update_and_counts():
    config = ExperimentConfig(
        task="adding",
        size=10,
        cell="rnn_tanh",
        hidden_size=4,
        batch_size=4,
        max_sequences=12,
        eval_every=100,
        eval_size=4,
        clip=1e-3,
        recurrent_gain=3.0,
    )
    result, _ = run_experiment(config)
    assert result.clipped_steps == len(result.grad_norms) == 3
    assert all(n > 1e-3 for n in result.grad_norms)


def test_recurrent_gain_makes_each_gate_block_orthogonal():
    config = ExperimentConfig(cell="gru", hidden_size=5, recurrent_gain=2.0)
    model = build_model(config, make_task("adding", 10))
    for block in model.rnn.weight_hh_l0.detach().split(5):
        assert torch.allclose(block @ block.T, 4.0 * torch.eye(5), atol=1e-5)


def test_runs_stop_when_solved_or_out_of_time(monkeypatch):
    config = ExperimentConfig(
        task="agreement", size=1, cell="gru", hidden_size=3, eval_size=4, max_seconds=0.0
    )
    result, _ = run_experiment(config)
    assert result.stopped == "max_seconds" and result.sequences == 0
    assert len(result.evals) == 1 and result.solved_at is None
    monkeypatch.setattr(AgreementTask, "solved", lambda self, metrics: True)
    result, _ = run_experiment(ExperimentConfig(task="agreement", size=1, eval_size=4))
    assert result.stopped == "solved" and result.solved_at == 0 and result.sequences == 0


def test_bad_config_fails_with_a_message():
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'sgd'"):
        ExperimentConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="cell must be one of"):
        build_model(ExperimentConfig(cell="transformer"), make_task("adding", 10))
