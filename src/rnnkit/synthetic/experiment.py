"""Train a small model of one cell on one synthetic problem, on the one trainer
(``rnnkit.train.Trainer``), for a bounded number of sequences or seconds, evaluating on a
fixed held-out set and stopping when solved.

The trainer owns the loop: optimiser, gradient clipping, the NaN guard, checkpoints
(``last/`` and ``best/``, best by the problem's ``score``), exact resume and
metrics.jsonl (loss, pre-clip gradient norm and whether clipping fired, every step; the
problem's metrics at every evaluation). The experiment maps its budget onto the trainer
(an epoch = ``eval_every`` sequences; ``max_sequences`` -> ``max_steps``; ``max_seconds``
-> ``max_minutes``), adds an evaluation before the first step, and derives its summary
from metrics.jsonl: result.json, curve.png (the headline metric against sequences) and
grad_norms.png (the pre-clip gradient norm of every step).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import rnnkit
from rnnkit.common.config import check_range
from rnnkit.common.io import atomic_write_text
from rnnkit.common.names import CELL_NAMES
from rnnkit.nn.factory import recurrent_layer
from rnnkit.synthetic import PROBLEMS, Problem, make_problem
from rnnkit.synthetic.gate_init import check_gate_init, init_gate_biases
from rnnkit.synthetic.model import SequenceModel
from rnnkit.synthetic.task import ProblemTask
from rnnkit.train import checkpoint as ckpt
from rnnkit.train import distributed, run_folder
from rnnkit.train.metrics import MetricsLog
from rnnkit.train.metrics import read as read_metrics
from rnnkit.train.optim import OptimConfig
from rnnkit.train.trainer import Trainer, TrainerConfig, TrainingDiverged

KIND = "experiment"
"""``meta.task`` in the config.json of an experiment's checkpoints."""

OPTIMIZERS = ("adam", "sgd", "rmsprop")
"""rmsprop: the update rule of Arjovsky, Shah and Bengio 2016's adding-problem runs."""

BUDGET = ("max_sequences", "max_seconds")
"""The fields a resumed run may change; every other one must match the checkpoint."""


@dataclass
class ExperimentConfig:
    """One run. ``size`` is T for adding and copy, the maximum number of modifiers for
    agreement. ``recurrent_gain``: if set, every H x H block of each ``weight_hh`` is
    orthogonal times this gain (above 1: a deliberately exploding start). ``clip``: the
    max gradient norm (None: measured, never clipped). ``gate_init``: how the gate biases
    start (``rnnkit.synthetic.gate_init``): "chrono" (Tallec and Ollivier 2018, T_max the
    problem's longest sequence), "forget1" or "uniform" (torch.nn's draw). A config
    saved before the field existed reads as "uniform", the start its run had.

    The defaults: Adam (Kingma and Ba 2015) at lr 1e-3, batches of 32, no clipping,
    H = 32 and the chrono start. From torch.nn's start the adding problem's gradient
    vanishes before it reaches the marked pairs and no cell leaves the trivial solution
    at T = 50 to 400; from chrono's, the LSTM and both GRUs solve it at T = 400
    (docs/vanishing_gradients.md, section 2)."""

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
    gate_init: str = "chrono"
    max_sequences: int = 200_000
    max_seconds: float = 60.0
    eval_every: int = 3200
    eval_size: int = 1000
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.task not in PROBLEMS:
            raise ValueError(f"task must be one of {', '.join(PROBLEMS)}, got {self.task!r}")
        try:
            make_problem(self.task, self.size)  # each problem checks its own size
        except ValueError as error:
            raise ValueError(f"size {self.size!r} does not fit {self.task}: {error}") from None
        if self.cell not in CELL_NAMES:
            raise ValueError(f"cell must be one of {', '.join(CELL_NAMES)}, got {self.cell!r}")
        lr = next(f for f in fields(OptimConfig) if f.name == "lr")
        check_range("lr", self.lr, **lr.metadata)  # the trainer's range for a learning rate
        check_range("recurrent_gain", self.recurrent_gain, optional=True, gt=0)
        check_range("seed", self.seed, min=0, max=2**32 - 1)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        check_gate_init(self.gate_init, self.cell)
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be a positive max-norm or None, got {self.clip!r}")
        for name in (
            "hidden_size",
            "num_layers",
            "batch_size",
            "max_sequences",
            "eval_every",
            "eval_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.max_seconds >= 0:
            raise ValueError(f"max_seconds must be >= 0, got {self.max_seconds!r}")

    @property
    def steps_per_eval(self) -> int:
        return math.ceil(self.eval_every / self.batch_size)

    @property
    def max_steps(self) -> int:
        return math.ceil(self.max_sequences / self.batch_size)


@dataclass
class ExperimentResult:
    config: ExperimentConfig
    evals: list[dict[str, float]] = field(default_factory=list)
    """One entry per evaluation: sequences, seconds, train_loss (the mean since the
    previous evaluation), valid_loss and the problem's metrics."""
    grad_norms: list[float] = field(default_factory=list)
    """The total gradient norm of every step, before clipping."""
    clipped_steps: int = 0
    solved_at: int | None = None
    """Training sequences seen when the held-out set was first solved."""
    stopped: str = ""
    """"solved", "max_sequences", "max_seconds", "interrupted" or "diverged at step N"."""
    sequences: int = 0
    seconds: float = 0.0
    """Training wall time, summed over the invocations (a resumed run adds its own)."""

    def final(self) -> dict[str, float]:
        return self.evals[-1] if self.evals else {}

    def to_json(self) -> dict:
        return asdict(self)


def build_model(config: ExperimentConfig, problem: Problem) -> SequenceModel:
    torch.manual_seed(config.seed)
    rnn = recurrent_layer(config.cell, problem.input_size, config.hidden_size, config.num_layers)
    if config.recurrent_gain is not None:
        H = config.hidden_size
        with torch.no_grad():
            for weights in rnn.all_weights:
                for block in weights[1].split(H, dim=0):  # [H, H] per gate
                    nn.init.orthogonal_(block, gain=config.recurrent_gain)
    init_gate_biases(rnn, config.gate_init, problem.max_length, config.seed)
    return SequenceModel(rnn, problem.output_size, problem.readout)


def _trainer(
    config: ExperimentConfig,
    model: SequenceModel,
    task: ProblemTask,
    run_dir: Path,
) -> Trainer:
    trainer_c = TrainerConfig(
        epochs=math.ceil(config.max_steps / config.steps_per_eval),
        max_steps=config.max_steps,
        max_minutes=config.max_seconds / 60,
        clip_norm=config.clip,
        seed=config.seed,
        out=str(run_dir),
        progress=False,
        device=config.device,
    )
    optim = OptimConfig(optimizer=config.optimizer, lr=config.lr)
    meta = {"task": KIND, "rnnkit_version": rnnkit.__version__}
    extra = {ckpt.CONFIG_FILE: {"experiment": asdict(config), "meta": meta}}
    return Trainer(model, task, trainer_c, optim, run_dir, extra)


def _check_resumable(config: ExperimentConfig, saved: ExperimentConfig) -> None:
    differ = [
        f.name
        for f in fields(ExperimentConfig)
        if f.name not in BUDGET and getattr(config, f.name) != getattr(saved, f.name)
    ]
    if differ:
        raise ValueError(
            f"cannot resume with a different {', '.join(differ)}: only {', '.join(BUDGET)} "
            "may change"
        )


_STOPPED = {  # the trainer's reasons, in the experiment's budget terms
    "done": "max_sequences",
    "max_steps": "max_sequences",
    "max_minutes": "max_seconds",
    "solved": "solved",
    "interrupted": "interrupted",
}


def run_experiment(
    config: ExperimentConfig,
    out: str | Path,
    *,
    resume: bool = False,
    on_eval: Callable[[dict[str, float]], None] | None = None,
) -> tuple[ExperimentResult, SequenceModel, Path]:
    """Train until solved, ``max_sequences`` or ``max_seconds``; write the run under
    ``out`` (a fresh numbered sibling if ``out`` already holds a run, unless ``resume``:
    then continue the run in ``out`` exactly). -> (result, final model, run directory).
    One process: under torchrun each would run the whole experiment in a folder of its own."""
    job = distributed.environment()
    if job.active:
        raise ValueError(
            f"rnnkit experiment runs on one process, but this is rank {job.rank} of "
            f"{job.world_size} (torchrun); start it without torchrun"
        )
    if resume:
        with run_folder.lock(out) as run_dir:
            return _run(config, run_dir, resume, on_eval)
    with run_folder.claim(out) as run_dir:
        return _run(config, run_dir, resume, on_eval)


def _run(
    config: ExperimentConfig,
    run_dir: Path,
    resume: bool,
    on_eval: Callable[[dict[str, float]], None] | None,
) -> tuple[ExperimentResult, SequenceModel, Path]:
    """``run_experiment`` in the locked run folder ``run_dir``."""
    problem = make_problem(config.task, config.size)
    if resume:  # the checkpoint's tensors against the config, before building anything
        _check_resumable(config, load_config(run_dir))
        checkpoint = ckpt.resolve(run_dir, prefer=("last", "best"))
        ckpt.check_fits(checkpoint, lambda: build_model(config, problem), config)
    model = build_model(config, problem)
    task = ProblemTask(
        problem,
        batch_size=config.batch_size,
        steps_per_eval=config.steps_per_eval,
        eval_size=config.eval_size,
        seed=config.seed,
        on_eval=on_eval,
    )
    trainer = _trainer(config, model, task, run_dir)
    start = time.perf_counter()
    if resume:
        trainer.resume(run_dir)
        stopped = ""
    else:
        stopped = _evaluate_at_start(trainer, task, run_dir)
    if not stopped and config.max_seconds == 0:  # the trainer reads max_minutes 0 as no limit
        stopped = "max_seconds"
        trainer.save("last")
    if not stopped:
        try:
            stopped = _STOPPED[trainer.fit().stopped]
        except TrainingDiverged:
            stopped = f"diverged at step {trainer.step}"
            trainer.save("last")  # the guard fires before the update: the weights are finite
    result = summarize(config, run_dir, stopped, time.perf_counter() - start)
    write_report(result, run_dir)
    return result, model, run_dir


def _evaluate_at_start(trainer: Trainer, task: ProblemTask, run_dir: Path) -> str:
    """Evaluate the untrained model and log it as the step-0 validation; -> "solved"
    (with a checkpoint) if it already solves the problem, else ""."""
    model = trainer.model.eval()
    with torch.no_grad():
        loss, score = task.evaluate(model)
    model.train()
    log = MetricsLog(run_dir / "metrics.jsonl")
    log.write(
        task.valid_metrics()
        | {"kind": "valid", "step": 0, "epoch": 0, "loss": loss, task.score_name: score}
        | {"elapsed_s": 0.0}
    )
    log.close()
    if task.solved():
        trainer.save("last")
        return "solved"
    return ""


_TRAINER_KEYS = {"kind", "step", "epoch", "loss", "clip_count", "elapsed_s", "partial_epoch"}


def summarize(
    config: ExperimentConfig, run_dir: str | Path, stopped: str, seconds: float
) -> ExperimentResult:
    """The result of the run in ``run_dir``, from its metrics.jsonl."""
    problem = make_problem(config.task, config.size)
    result = ExperimentResult(config, stopped=stopped)
    losses: list[float] = []
    offset = previous = 0.0  # elapsed_s restarts at each invocation: sum them
    for r in read_metrics(Path(run_dir) / "metrics.jsonl"):
        if r["elapsed_s"] < previous:
            offset += previous
        previous = r["elapsed_s"]
        if r["kind"] == "train":
            result.grad_norms.append(r["grad_norm"])
            result.clipped_steps += bool(r["clipped"])
            losses.append(r["loss"])
            continue
        metrics = {k: v for k, v in r.items() if k not in _TRAINER_KEYS}
        entry = {
            "sequences": r["step"] * config.batch_size,
            "seconds": offset + r["elapsed_s"],
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "valid_loss": r["loss"],
        }
        result.evals.append(entry | metrics)
        losses.clear()
        if result.solved_at is None and problem.solved(metrics):
            result.solved_at = entry["sequences"]
    result.sequences = len(result.grad_norms) * config.batch_size
    result.seconds = offset + previous if result.grad_norms else seconds
    return result


def write_report(result: ExperimentResult, run_dir: str | Path) -> Path:
    """result.json, curve.png and grad_norms.png under ``run_dir``."""
    from rnnkit.diagnostics.plots import plot_curves

    out = Path(run_dir)
    atomic_write_text(out / "result.json", json.dumps(result.to_json(), indent=1))
    c = result.config
    name = f"{c.cell} on {c.task}({c.size})"
    metric = make_problem(c.task, c.size).headline
    plot_curves(
        {name: np.array([e[metric] for e in result.evals])},
        out / "curve.png",
        title=name,
        ylabel=metric,
        xlabel="training sequences",
        log=False,
        xs={name: np.array([e["sequences"] for e in result.evals])},
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


def load_config(run: str | Path) -> ExperimentConfig:
    """The config of an experiment run directory or checkpoint."""
    checkpoint = ckpt.resolve(run, prefer=("last", "best"))
    saved = ckpt.read_json(checkpoint, ckpt.CONFIG_FILE)
    meta = saved.get("meta")
    found = meta.get("task") if isinstance(meta, dict) else None
    if found != KIND:
        raise ckpt.CheckpointError(f"{checkpoint} holds a {found!r} model, not an experiment")
    fields = saved.get("experiment")
    try:
        return ExperimentConfig(**_saved_fields(fields))  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise ckpt.CheckpointError(
            f"{checkpoint / ckpt.CONFIG_FILE}: 'experiment' is not a valid experiment config "
            f"({error})"
        ) from None


def _saved_fields(fields: Any) -> Any:
    """A saved config's fields; one saved before ``gate_init`` existed had torch.nn's
    start, "uniform"."""
    if isinstance(fields, dict) and "gate_init" not in fields:
        return fields | {"gate_init": "uniform"}
    return fields


def load_run(path: str | Path) -> tuple[SequenceModel, ExperimentConfig]:
    """The final model and config of an experiment: a run directory or one of its
    checkpoints, or the model.safetensors that earlier versions wrote (the config in
    its metadata), or a directory holding one."""
    path = Path(path)
    if path.is_file() and (path.parent / ckpt.CONFIG_FILE).is_file():
        path = path.parent  # a checkpoint's model.safetensors: the checkpoint
    legacy = path / "model.safetensors" if path.is_dir() else path
    if legacy.is_file() and not (legacy.parent / ckpt.CONFIG_FILE).is_file():
        return _load_legacy(legacy)
    return ckpt.load_run(path, "last", _load)


def _load(checkpoint: Path) -> tuple[SequenceModel, ExperimentConfig]:
    config = load_config(checkpoint)
    problem = make_problem(config.task, config.size)
    model = ckpt.build_model(checkpoint, lambda: build_model(config, problem), config)
    assert isinstance(model, SequenceModel)
    return model.eval(), config


def _load_legacy(path: Path) -> tuple[SequenceModel, ExperimentConfig]:
    from safetensors import SafetensorError, safe_open

    ckpt.read_header(path)  # a damaged or foreign file: one message, before reading on
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata: dict[str, Any] = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as error:
        raise ckpt.CheckpointError(f"{str(path)!r} is damaged: {error}") from None
    if "config" not in metadata:
        raise ckpt.CheckpointError(f"{path} is not a model written by `rnnkit experiment`")
    try:
        config = ExperimentConfig(**_saved_fields(json.loads(metadata["config"])))
    except (TypeError, ValueError) as error:
        raise ckpt.CheckpointError(
            f"{path}: its metadata is not an experiment config ({error})"
        ) from None
    model = build_model(config, make_problem(config.task, config.size))
    ckpt.load_model_tensors(model, tensors)
    return model.eval(), config
