"""The experiment driver on the trainer and the `diagnose` / `experiment` commands, end to
end on tiny settings: exact resume, the old output format still diagnosable."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from rnnkit.cli import app, diagnose, experiment  # noqa: F401  (registers the commands)
from rnnkit.synthetic import AgreementProblem, make_problem
from rnnkit.synthetic.experiment import ExperimentConfig, build_model, load_run, run_experiment
from rnnkit.synthetic.task import ProblemTask
from rnnkit.train import checkpoint as ckpt
from rnnkit.train.metrics import read as read_metrics

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
    for name in ("result.json", "curve.png", "grad_norms.png", "metrics.jsonl"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "last" / ckpt.MODEL_FILE).is_file() and (out / "best").is_dir()
    saved = json.loads((out / "result.json").read_text())
    assert saved["sequences"] == 16 and saved["stopped"] == "max_sequences"
    assert [e["sequences"] for e in saved["evals"]] == [0, 8, 16]
    assert saved["evals"][-1]["baseline"] == pytest.approx(10 * 2.0794415 / 23)
    assert len(saved["grad_norms"]) == 4
    assert saved["clipped_steps"] == sum(n > 0.5 for n in saved["grad_norms"])
    # The summary is derived from the trainer's log: one record per step, pre-clip norms.
    train = [r for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["grad_norm"] for r in train] == saved["grad_norms"]
    assert [r["clipped"] for r in train] == [n > 0.5 for n in saved["grad_norms"]]

    diag = tmp_path / "diag"
    result = runner.invoke(
        app,
        [
            "diagnose",
            "--model",
            str(out),
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


def test_clipping_bounds_the_update_and_counts(tmp_path):
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
    result, _, _ = run_experiment(config, tmp_path)
    assert result.clipped_steps == len(result.grad_norms) == 3
    assert all(n > 1e-3 for n in result.grad_norms)


def test_recurrent_gain_makes_each_gate_block_orthogonal():
    config = ExperimentConfig(cell="gru", hidden_size=5, recurrent_gain=2.0)
    model = build_model(config, make_problem("adding", 10))
    for block in model.rnn.weight_hh_l0.detach().split(5):
        assert torch.allclose(block @ block.T, 4.0 * torch.eye(5), atol=1e-5)


def test_runs_stop_when_solved_or_out_of_time(monkeypatch, tmp_path):
    config = ExperimentConfig(
        task="agreement", size=1, cell="gru", hidden_size=3, eval_size=4, max_seconds=0.0
    )
    result, _, _ = run_experiment(config, tmp_path / "a")
    assert result.stopped == "max_seconds" and result.sequences == 0
    assert len(result.evals) == 1 and result.solved_at is None
    monkeypatch.setattr(AgreementProblem, "solved", lambda self, metrics: True)
    config = ExperimentConfig(task="agreement", size=1, eval_size=4)
    result, _, _ = run_experiment(config, tmp_path / "b")
    assert result.stopped == "solved" and result.solved_at == 0 and result.sequences == 0


def test_solved_during_training_stops_the_trainer(monkeypatch, tmp_path):
    calls = []

    def solved(self):  # not at the start, then at the first validation
        calls.append(1)
        return len(calls) >= 2

    monkeypatch.setattr(ProblemTask, "solved", solved)
    config = ExperimentConfig(
        task="agreement", size=1, hidden_size=3, batch_size=2, eval_every=4, eval_size=4
    )
    result, _, run_dir = run_experiment(config, tmp_path)
    assert result.stopped == "solved" and result.sequences == 4 and len(calls) == 2
    assert [e["sequences"] for e in result.evals] == [0, 4]
    assert (run_dir / "last").is_dir()


def test_resume_continues_exactly(tmp_path):
    """Stopped by its sequence budget after 3 steps (mid-evaluation period) and resumed
    to 8: the same weights, metrics log and summary as one uninterrupted run of 8."""
    config = ExperimentConfig(
        task="adding",
        size=10,
        cell="lstm",
        hidden_size=4,
        batch_size=4,
        eval_every=16,
        eval_size=8,
        clip=0.5,
        max_sequences=32,
    )
    whole, model, _ = run_experiment(config, tmp_path / "whole")
    first, _, run_dir = run_experiment(replace(config, max_sequences=12), tmp_path / "parts")
    assert first.stopped == "max_sequences" and first.sequences == 12
    resumed, model_2, _ = run_experiment(config, run_dir, resume=True)
    for (name, a), b in zip(model.state_dict().items(), model_2.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.grad_norms == whole.grad_norms
    assert resumed.clipped_steps == whole.clipped_steps
    # The interrupted run also validated when it stopped (at 12 sequences); otherwise the
    # evaluations are those of the uninterrupted run, to the bit.
    evals = [e for e in resumed.evals if e["sequences"] != 12]
    drop = ("seconds", "train_loss")  # wall time; the mean since the previous evaluation
    assert [{k: v for k, v in e.items() if k not in drop} for e in evals] == [
        {k: v for k, v in e.items() if k not in drop} for e in whole.evals
    ]
    with pytest.raises(ValueError, match="cannot resume with a different hidden_size"):
        run_experiment(replace(config, hidden_size=5), run_dir, resume=True)


def test_diagnose_reads_the_old_experiment_format(tmp_path):
    """Earlier versions wrote result.json and model.safetensors (the config in its
    metadata) into the run directory; such a directory still loads and diagnoses, and
    its config says the gate start it was trained with (torch.nn's, "uniform")."""
    config = ExperimentConfig(
        task="adding", size=10, cell="gru", hidden_size=4, gate_init="uniform"
    )
    model = build_model(config, make_problem("adding", 10))
    old_config = {  # no such fields then
        k: v for k, v in asdict(config).items() if k not in ("device", "gate_init")
    }
    old = tmp_path / "old"
    old.mkdir()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        old / "model.safetensors",
        metadata={"config": json.dumps(old_config)},
    )
    (old / "result.json").write_text(json.dumps({"config": old_config, "evals": []}))
    for path in (old, old / "model.safetensors"):
        loaded, loaded_config = load_run(path)
        assert loaded_config == config
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    result = runner.invoke(
        app, ["diagnose", "--model", str(old), "--batch-size", "2", "--out", str(tmp_path / "d")]
    )
    assert result.exit_code == 0, result.output
    numbers = json.loads((tmp_path / "d" / "numbers.json").read_text())
    assert set(numbers["saturated"]) == {"r", "z"} and len(numbers["jacobian_norms"]) == 10


def test_bad_config_fails_with_a_message():
    with pytest.raises(
        ValueError, match="optimizer must be one of adam, sgd, rmsprop, got 'lbfgs'"
    ):
        ExperimentConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="gate_init must be one of chrono, forget1, uniform"):
        ExperimentConfig(gate_init="ones")
    with pytest.raises(ValueError, match="cell must be one of"):
        build_model(ExperimentConfig(cell="transformer"), make_problem("adding", 10))


def test_experiment_refuses_torchrun(tmp_path, monkeypatch):
    """Under torchrun every process would run the whole experiment: one clear error."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="rank 1 of 2"):
        run_experiment(ExperimentConfig(), tmp_path / "run")
    assert not (tmp_path / "run").exists()
