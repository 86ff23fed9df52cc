"""Exact resume, atomic checkpoints and the NaN guard of the shared trainer."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from rnnkit.tasks.lm import api as lm
from rnnkit.train import OptimConfig, StepResult, Trainer, TrainerConfig, TrainingDiverged
from rnnkit.train import checkpoint as ckpt
from rnnkit.train.metrics import read

TEXT = lm.default_corpus()[:1400]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(tmp_path: Path, *extra: str) -> dict:
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    base = (
        "--data.text",
        str(path),
        "--model.hidden_size",
        "16",
        "--model.num_layers",
        "2",
        "--model.embedding_size",
        "8",
        "--data.batch_size",
        "8",
        "--data.bptt",
        "12",
        "--trainer.progress",
        "false",
        "--trainer.epochs",
        "2",
    )
    return lm.configure(overrides=(*base, *extra))


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read(run_dir / "metrics.jsonl") if r["kind"] == "train"}


@pytest.mark.parametrize(
    "stop, extra",
    [
        (7, ("--model.cell", "lstm", "--model.dropout", "0.3")),  # mid-epoch: carry and RNG
        (14, ("--model.cell", "gru", "--data.variable_bptt", "true")),
        (9, ("--model.cell", "lstm", "--trainer.average", "0.9")),  # the average resumes too
    ],
    ids=["lstm-dropout-mid-epoch", "gru-variable-bptt", "weight-average"],
)
def test_resume_equals_uninterrupted(tmp_path, stop, extra):
    full = lm.train(tiny(tmp_path, "--trainer.out", str(tmp_path / "full"), *extra), log=str)
    part = lm.train(
        tiny(
            tmp_path,
            "--trainer.out",
            str(tmp_path / "part"),
            "--trainer.max_steps",
            str(stop),
            *extra,
        ),
        log=str,
    )
    assert part.result.stopped == "max_steps" and part.result.step == stop
    done = lm.train(resume=part.out_dir, changes={"trainer": {"max_steps": None}}, log=str)
    assert done.result.step == full.result.step > stop

    a, b = train_losses(full.out_dir), train_losses(done.out_dir)
    assert sorted(a) == sorted(b) == list(range(1, full.result.step + 1))
    for step in a:
        assert a[step] == b[step], f"step {step}: {a[step]} != {b[step]}"
    if "--data.variable_bptt" in extra:  # AWD-LSTM: the rate follows the window length
        assert len({r["lr"] for r in read(full.out_dir / "metrics.jsonl") if "lr" in r}) > 1
    wa = load_file(full.out_dir / "last" / ckpt.MODEL_FILE)
    wb = load_file(done.out_dir / "last" / ckpt.MODEL_FILE)
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_resume_refuses_changes_that_alter_the_run(tmp_path):
    part = lm.train(
        tiny(tmp_path, "--trainer.out", str(tmp_path / "r"), "--trainer.max_steps", "2"), log=str
    )
    with pytest.raises(ValueError, match=r"--model.hidden_size cannot change when resuming"):
        lm.train(resume=part.out_dir, changes={"model": {"hidden_size": 32}}, log=str)


def test_run_writes_metrics_plot_and_checkpoints(tmp_path):
    run = lm.train(
        tiny(tmp_path, "--trainer.out", str(tmp_path / "r"), "--trainer.epochs", "1"), log=str
    )
    records = read(run.out_dir / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == run.result.step
    assert all(r["grad_norm"] > 0 and isinstance(r["clipped"], bool) for r in train)
    assert [r["kind"] for r in records].count("valid") == 1
    assert (run.out_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("best", "last"):
        files = {p.name for p in (run.out_dir / name).iterdir()}
        assert files == {
            "checksums.json",
            "model.safetensors",
            "state.safetensors",
            "state.json",
            "config.json",
            "tokenizer.json",
        }
    # A second run into the same directory gets a fresh one instead of overwriting.
    again = lm.train(
        tiny(tmp_path, "--trainer.out", str(tmp_path / "r"), "--trainer.max_steps", "1"), log=str
    )
    assert again.out_dir == tmp_path / "r-2"


# --- atomic checkpoints -------------------------------------------------------------


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    target = tmp_path / "last"
    ckpt.write_atomic(target, {"model.safetensors": {"w": torch.ones(3)}, "state.json": {"a": 1}})

    def crash(tensors, path):  # dies half-way through writing the weights
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.write_atomic(target, {"model.safetensors": {"w": torch.zeros(3)}, "state.json": {}})
    assert torch.equal(load_file(target / "model.safetensors")["w"], torch.ones(3))
    assert ckpt.read_json(target, "state.json") == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temp dir left over


def test_crash_between_renames_falls_back_to_previous(tmp_path):
    ckpt.write_atomic(tmp_path / "last", {"config.json": {"v": 1}})
    (tmp_path / "last").rename(tmp_path / "last.previous")  # the state mid-swap
    assert ckpt.resolve(tmp_path) == tmp_path / "last.previous"


def test_resolve_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.resolve(tmp_path / "nope")
    with pytest.raises(ckpt.CheckpointError, match="not an rnnkit checkpoint"):
        ckpt.resolve(tmp_path)


# --- the trainer with another task: no carry, a NaN on purpose ------------------------


class Regression:
    """A stateless task (a future classifier's shape): y = x @ w, MSE."""

    def __init__(self, nan_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(40, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5])
        self.nan_at = nan_at
        self.calls = 0

    def batches_per_epoch(self, epoch: int) -> int:
        return 4

    def batches(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(start, 4):
            yield self.x[i * 10 : (i + 1) * 10], self.y[i * 10 : (i + 1) * 10]

    def train_step(self, model, batch, carry) -> StepResult:
        self.calls += 1
        x, y = batch
        loss = ((model(x).squeeze(-1) - y) ** 2).mean()
        if self.calls == self.nan_at:
            loss = loss * math.nan
        return StepResult(loss, len(y), None)

    def evaluate(self, model) -> float:
        return float(((model(self.x).squeeze(-1) - self.y) ** 2).mean())

    def describe(self, loss: float) -> dict[str, float]:
        return {"rmse": loss**0.5}


def make_trainer(tmp_path, task, **trainer) -> Trainer:
    torch.manual_seed(0)
    config = TrainerConfig(progress=False, checkpoint_every=1, **trainer)
    return Trainer(
        nn.Linear(3, 1),
        task,
        config,
        OptimConfig(optimizer="sgd", lr=0.1),
        tmp_path,
        log=lambda s: None,
    )


def test_generic_task_trains(tmp_path):
    result = make_trainer(tmp_path, Regression(), epochs=5).fit()
    assert result.step == 20 and result.stopped == "done"
    assert result.valid_loss is not None and result.valid_loss < 0.1


def test_nan_guard_names_the_step_and_keeps_checkpoints_finite(tmp_path):
    trainer = make_trainer(tmp_path, Regression(nan_at=3))
    with pytest.raises(TrainingDiverged, match=r"at step 3 .*the loss is nan.*clip_norm"):
        trainer.fit()
    weights = load_file(tmp_path / "last" / ckpt.MODEL_FILE)
    assert ckpt.read_json(tmp_path / "last", ckpt.STATE_JSON)["step"] == 2
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())


def test_checkpoint_refuses_non_finite_weights(tmp_path):
    trainer = make_trainer(tmp_path, Regression())
    with torch.no_grad():
        trainer.model.weight[0, 0] = math.inf
    with pytest.raises(TrainingDiverged, match="refusing to write"):
        trainer.save("last")
    assert not (tmp_path / "last").exists()


def test_clipping_is_counted(tmp_path):
    trainer = make_trainer(tmp_path, Regression(), epochs=1, clip_norm=1e-3)
    trainer.fit()
    records = [r for r in read(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert trainer.clip_count == 4 and all(r["clipped"] and r["grad_norm"] > 1e-3 for r in records)


def test_ctrl_c_stops_after_the_step_with_a_checkpoint(tmp_path):
    import signal

    class Interrupted(Regression):
        def train_step(self, model, batch, carry) -> StepResult:
            if self.calls == 2:  # a Ctrl-C arrives during the third step
                signal.raise_signal(signal.SIGINT)
            return super().train_step(model, batch, carry)

    trainer = make_trainer(tmp_path, Interrupted(), epochs=3)
    trainer.config.checkpoint_every = 0
    # Python's default handler, or SIG_IGN in a process started in the background.
    before = signal.getsignal(signal.SIGINT)
    result = trainer.fit()
    assert result.stopped == "interrupted" and result.step == 3
    assert ckpt.read_json(tmp_path / "last", ckpt.STATE_JSON)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before


def test_a_task_with_a_score_keeps_the_best_by_score_not_by_loss(tmp_path, capsys):
    """The loss falls every epoch, but the score peaks at epochs 2 and 3: "best" is epoch
    3's weights (the tie goes to the lower loss), the log shows the score, and the state
    remembers it for resume."""

    class Scored(Regression):
        score_name = "accuracy"

        def __init__(self) -> None:
            super().__init__()
            self.scores = iter([50.0, 90.0, 90.0, 80.0])

        def evaluate(self, model) -> tuple[float, float]:
            return super().evaluate(model), next(self.scores)

    trainer = make_trainer(tmp_path, Scored(), epochs=4)
    trainer.config.checkpoint_every = 0
    weights_by_epoch = []
    save = trainer.save

    def remember(name: str = "last"):
        if name == "last":
            if trainer.step:  # not the checkpoint fit() writes before its first step
                weights_by_epoch.append(trainer.model.weight.detach().clone())
        return save(name)

    trainer.save = remember  # type: ignore[method-assign]
    result = trainer.fit()
    valid = [r for r in read(tmp_path / "metrics.jsonl") if r["kind"] == "valid"]
    assert [r["accuracy"] for r in valid] == [50.0, 90.0, 90.0, 80.0]
    assert valid[3]["loss"] < valid[2]["loss"] < valid[1]["loss"]  # the loss would keep 4
    assert result.best_score == 90.0 and result.best_valid_loss == valid[2]["loss"]
    best = load_file(tmp_path / "best" / ckpt.MODEL_FILE)["weight"]
    assert torch.equal(best, weights_by_epoch[2])
    state = ckpt.read_json(tmp_path / "last", ckpt.STATE_JSON)
    assert state["best_score"] == 90.0 and state["last_score"] == 80.0
    out = capsys.readouterr().out
    assert f"epoch 2 step 8: valid loss {valid[1]['loss']:.4f} (rmse " in out
    assert ", accuracy 90.00, " in out


def test_weight_average_is_the_ema_of_the_training_weights(tmp_path):
    """With --trainer.average d, validation and the saved model use the exponential moving
    average of the weights after each step (the first step's weights to start), and the
    checkpoint's state keeps the training weights themselves for --resume."""
    decay = 0.8
    trainer = make_trainer(tmp_path, Regression(), epochs=2, average=decay)
    after_each_step: list[torch.Tensor] = []
    step = trainer.train_step

    def record(batch):
        out = step(batch)
        after_each_step.append(trainer.model.weight.detach().clone())
        return out

    trainer.train_step = record  # type: ignore[method-assign]
    result = trainer.fit()
    expected = after_each_step[0]
    for w in after_each_step[1:]:
        expected = decay * expected + (1 - decay) * w
    saved = load_file(tmp_path / "last" / ckpt.MODEL_FILE)["weight"]
    torch.testing.assert_close(saved, expected)
    assert not torch.allclose(saved, after_each_step[-1])
    state = load_file(tmp_path / "last" / ckpt.STATE_TENSORS)
    assert torch.equal(state["training_weights.weight"], after_each_step[-1])
    assert int(state["averaged_steps"]) == len(after_each_step) == 8
    averaged = nn.Linear(3, 1)
    averaged.load_state_dict(load_file(tmp_path / "last" / ckpt.MODEL_FILE))
    with torch.no_grad():
        assert result.valid_loss == pytest.approx(Regression().evaluate(averaged))


@pytest.mark.parametrize("bad", [1.0, -0.1])
def test_weight_average_decay_out_of_range_is_named(tmp_path, bad):
    with pytest.raises(ValueError, match=rf"trainer.average must be in \[0, 1\), got {bad}"):
        make_trainer(tmp_path, Regression(), average=bad)


def test_lm_run_returns_the_weight_average(tmp_path):
    run = lm.train(
        tiny(tmp_path, "--trainer.out", str(tmp_path / "r"), "--trainer.average", "0.9"), log=str
    )
    saved = load_file(run.out_dir / "last" / ckpt.MODEL_FILE)
    training = load_file(run.out_dir / "last" / ckpt.STATE_TENSORS)
    returned = ckpt.model_tensors(run.model)
    assert sorted(returned) == sorted(saved)
    for name, value in saved.items():
        assert torch.equal(returned[name], value), name
    assert not torch.equal(saved["embedding.weight"], training["training_weights.embedding.weight"])
