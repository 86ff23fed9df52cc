"""A thin experiment driver: train a small model of one cell on one synthetic task for a
bounded number of sequences or seconds, and report the task's metric as it goes.

Deliberately small and explicit: Adam or SGD, optional gradient-norm clipping, periodic
evaluation on a fixed held-out set, stop when solved. It records what the long-range
experiments need to show (the pre-clipping gradient norm of every step, how often
clipping fired, and where the loss first became non-finite) and nothing more; the
general trainer (checkpoints, resume, schedules, NaN guard) is ``rnnkit.train``'s job.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

import rnnkit
from rnnkit.nn.cells import CELLS
from rnnkit.nn.layers import RNNBase
from rnnkit.synthetic import Batch, Task, make_task


def make_layer(cell: str, input_size: int, hidden_size: int, num_layers: int = 1) -> RNNBase:
    """An rnnkit layer stack of the cell kind named as in ``rnnkit.nn.cells.CELLS``."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    if cell.startswith("rnn_"):
        return rnnkit.RNN(input_size, hidden_size, num_layers, nonlinearity=cell[4:])
    if cell.startswith("gru"):
        return rnnkit.GRU(input_size, hidden_size, num_layers, reset_after=cell == "gru")
    return rnnkit.LSTM(input_size, hidden_size, num_layers)


class SequenceModel(nn.Module):
    """A layer stack and a linear head, read as the task says (``Task.readout``)."""

    def __init__(self, rnn: RNNBase, output_size: int, readout: str) -> None:
        super().__init__()
        if readout not in ("final", "every_step"):
            raise ValueError(f"readout must be 'final' or 'every_step', got {readout!r}")
        self.rnn, self.readout = rnn, readout
        self.head = nn.Linear(rnn.hidden_size * rnn.num_directions, output_size)

    def read(self, output: Tensor, h_n: Tensor | tuple[Tensor, ...]) -> Tensor:
        """The head on what the layer returned: output [T, B, H] and h_n."""
        if self.readout == "every_step":
            return self.head(output)  # [T, B, O]
        h = h_n[0] if isinstance(h_n, tuple) else h_n  # [L * dirs, B, H]
        return self.head(h[-1])  # [B, O]: the top layer at each sequence's last step

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.read(*self.rnn(x, lengths=lengths))

    def loss_fn(
        self, task: Task, batch: Batch
    ) -> Callable[[Tensor, Tensor | tuple[Tensor, ...]], Tensor]:
        """``loss_fn(output, h_n)`` for ``rnnkit.diagnostics.gradient_flow``."""
        return lambda output, h_n: task.loss(self.read(output, h_n), batch)


@dataclass
class ExperimentConfig:
    """One run. ``size`` is T for adding and copy, the maximum number of modifiers for
    agreement. ``recurrent_gain``: if set, every H x H block of each ``weight_hh`` is
    orthogonal times this gain (above 1: a deliberately exploding start)."""

    task: str = "adding"
    size: int = 50
    cell: str = "gru"
    hidden_size: int = 32
    num_layers: int = 1
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    clip: float | None = None
    recurrent_gain: float | None = None
    max_sequences: int = 200_000
    max_seconds: float = 60.0
    eval_every: int = 3200
    eval_size: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be a positive max-norm or None, got {self.clip!r}")
        for name in ("hidden_size", "num_layers", "batch_size", "max_sequences", "eval_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    evals: list[dict[str, float]] = field(default_factory=list)
    """One entry per evaluation: sequences, seconds, train_loss and the task's metrics."""
    grad_norms: list[float] = field(default_factory=list)
    """The total gradient norm of every step, before clipping."""
    clipped_steps: int = 0
    solved_at: int | None = None
    """Training sequences seen when the held-out set was first solved."""
    stopped: str = ""
    sequences: int = 0
    seconds: float = 0.0

    def final(self) -> dict[str, float]:
        return self.evals[-1] if self.evals else {}

    def to_json(self) -> dict:
        return asdict(self)


def build_model(config: ExperimentConfig, task: Task) -> SequenceModel:
    torch.manual_seed(config.seed)
    rnn = make_layer(config.cell, task.input_size, config.hidden_size, config.num_layers)
    if config.recurrent_gain is not None:
        H = config.hidden_size
        with torch.no_grad():
            for weights in rnn.all_weights:
                for block in weights[1].split(H, dim=0):  # [H, H] per gate
                    nn.init.orthogonal_(block, gain=config.recurrent_gain)
    return SequenceModel(rnn, task.output_size, task.readout)


@torch.no_grad()
def evaluate(model: SequenceModel, task: Task, batch: Batch) -> dict[str, float]:
    model.eval()
    metrics = task.metrics(model(batch.x, batch.lengths), batch)
    model.train()
    return metrics


def run_experiment(
    config: ExperimentConfig,
    *,
    on_eval: Callable[[dict[str, float]], None] | None = None,
) -> tuple[ExperimentResult, SequenceModel]:
    """Train until solved, ``max_sequences`` or ``max_seconds``; -> (result, model)."""
    task = make_task(config.task, config.size)
    model = build_model(config, task)
    train_seed, eval_seed = np.random.SeedSequence(config.seed).spawn(2)
    rng = np.random.default_rng(train_seed)
    held_out = task.sample(np.random.default_rng(eval_seed), config.eval_size)
    params = list(model.parameters())
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=config.lr)
        if config.optimizer == "adam"
        else torch.optim.SGD(params, lr=config.lr)
    )
    result = ExperimentResult(config)
    max_norm = config.clip if config.clip is not None else math.inf
    start, next_eval = time.perf_counter(), 0
    losses: list[float] = []

    def record() -> bool:
        metrics = evaluate(model, task, held_out)
        entry = {"sequences": result.sequences, "seconds": time.perf_counter() - start}
        entry["train_loss"] = float(np.mean(losses)) if losses else float("nan")
        result.evals.append(entry | metrics)
        losses.clear()
        if on_eval is not None:
            on_eval(result.evals[-1])
        if task.solved(metrics) and result.solved_at is None:
            result.solved_at = result.sequences
        return result.solved_at is not None

    while True:
        if result.sequences >= next_eval:
            next_eval += config.eval_every
            if record():
                result.stopped = "solved"
                break
        if result.sequences >= config.max_sequences:
            result.stopped = "max_sequences"
            break
        if time.perf_counter() - start >= config.max_seconds:
            result.stopped = "max_seconds"
            break
        batch = task.sample(rng, config.batch_size)
        loss = task.loss(model(batch.x, batch.lengths), batch)
        step = len(result.grad_norms)
        if not torch.isfinite(loss):
            result.stopped = f"non-finite loss at step {step}"
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        result.grad_norms.append(norm)
        if norm > max_norm:
            result.clipped_steps += 1
        opt.step()
        losses.append(loss.item())
        result.sequences += config.batch_size
    if result.stopped != "solved" and result.evals[-1]["sequences"] != result.sequences:
        record()
    result.seconds = time.perf_counter() - start
    return result, model


def save_run(result: ExperimentResult, model: SequenceModel, out: str | Path) -> Path:
    """Write result.json, curve.png, grad_norms.png and model.safetensors under ``out``."""
    from rnnkit.diagnostics.plots import plot_curves

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result.to_json(), indent=1))
    # safetensors, never pickle; the config rides in its metadata. Temp file + rename:
    # a crash never leaves a half-written model.
    tmp = out / ".model.safetensors.tmp"
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        tmp,
        metadata={"config": json.dumps(asdict(result.config))},
    )
    os.replace(tmp, out / "model.safetensors")
    task = make_task(result.config.task, result.config.size)
    c = result.config
    name = f"{c.cell} on {c.task}({c.size})"
    metric = task.headline
    xs = np.array([e["sequences"] for e in result.evals])
    plot_curves(
        {name: np.array([e[metric] for e in result.evals])},
        out / "curve.png",
        title=name,
        ylabel=metric,
        xlabel="training sequences",
        log=False,
        xs={name: xs},
    )
    if result.grad_norms:
        plot_curves(
            {name: np.array(result.grad_norms)},
            out / "grad_norms.png",
            title=f"{name}: gradient norm before clipping",
            ylabel="||g||",
            xlabel="step",
        )
    return out


def load_run(path: str | Path) -> tuple[SequenceModel, ExperimentConfig]:
    """The model and config that ``save_run`` wrote to ``path`` (model.safetensors)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "config" not in metadata:
        raise ValueError(f"{path} is not a model written by `rnnkit experiment`")
    config = ExperimentConfig(**json.loads(metadata["config"]))
    model = build_model(config, make_task(config.task, config.size))
    model.load_state_dict(tensors)
    return model, config
