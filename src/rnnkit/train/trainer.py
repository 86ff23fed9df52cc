"""The one training loop, shared by every task: language models, classifiers, taggers,
seq2seq, music and forecasting models, and the synthetic long-range problems.

A task supplies batches and a loss; the trainer owns everything else: the optimiser and
its schedule, truncated BPTT state carry, gradient clipping, the NaN guard, weight
averaging, validation, checkpoints (last and best), exact resume, the metrics log, the
progress bar and the loss plot.

The task contract (``Task``)::

    task.batches_per_epoch(epoch) -> int
    task.batches(epoch, start) -> iterator over the epoch's batches from index ``start``
                                  (epochs count from 1; the same (epoch, start) must give
                                  the same batches, which is what makes resume exact)
    task.train_step(model, batch, carry) -> StepResult(loss, count, carry)
    task.evaluate(model) -> mean validation loss per counted item (nats), or
                            (loss, score) for a task with ``score_name`` (below)
    task.describe(loss) -> {"ppl": ...} or {"bpc": ...}: how to show a loss

Optionally, a task that reports a metric (a tagger's span F1, a classifier's accuracy)
names it in ``task.score_name`` and returns it beside the loss from ``evaluate``, higher
is better: the trainer shows it beside the validation loss and keeps the best checkpoint
by it, not by the loss, so the checkpoint a user gets is the one with the figure they
are shown.

Two more optional members, for a task with a goal (the synthetic problems of
``rnnkit.synthetic``): ``task.valid_metrics() -> dict[str, float]``, further figures of
the latest ``evaluate``, written into that validation's record of metrics.jsonl; and
``task.solved() -> bool``, asked after each epoch's validation: once true, the trainer
checkpoints and stops (``stopped == "solved"``).

Truncated BPTT (Williams & Peng 1990; Sutskever 2013, section 2.4): ``carry`` is the
recurrent state the previous batch ended in. The trainer detaches it after each step,
so gradients stop at the window boundary while the state flows on, and resets it to
None at each epoch's start. A task without state returns ``carry=None``.

Under torchrun (``rnnkit.train.distributed``) each rank runs this loop on its share of
every batch: ``task.batches`` yields that rank's share (None where it is empty, a last
batch smaller than the world), each rank backpropagates its loss times its count and the
gradients are summed over the ranks and divided by the global count, so every step equals
the one-process step on the whole batch up to rounding. Stops are agreed by all ranks,
validation runs on rank 0 and is broadcast, and rank 0 alone writes (checkpoints hold
every rank's RNG and carried state).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rnnkit.common.notices import notify
from rnnkit.nn.kernels.precision import bf16_native
from rnnkit.train import checkpoint as ckpt
from rnnkit.train import distributed, run_folder
from rnnkit.train.config import TrainerConfig
from rnnkit.train.distributed import resolve_device
from rnnkit.train.metrics import MetricsLog, plot
from rnnkit.train.optim import OptimConfig, Schedule, clip_gradients, make_optimizer, set_lr

# Keys in the checkpoint's state tensors of a run that averages its weights.
_TRAINING_WEIGHTS, _AVERAGED_STEPS = "training_weights.", "averaged_steps"


@dataclass
class StepResult:
    loss: Tensor
    """Mean loss over ``count`` items, with a graph to backpropagate through."""
    count: int
    """Items (tokens) in the batch: for throughput and for weighting."""
    carry: Any = None
    """The recurrent state to continue from in the next batch (TBPTT), or None."""
    lr_scale: float = 1.0
    """Multiplies this step's learning rate (AWD-LSTM scales it by T / bptt for a
    variable-length window, Merity et al. 2017, section 4.1)."""
    weight: float | None = None
    """What ``loss`` is a mean over, when that is not ``count`` (a tagger's loss per
    sentence, counted in tokens): under torchrun each rank's loss weighs this much in the
    global mean."""


class Task(Protocol):
    def batches_per_epoch(self, epoch: int) -> int: ...
    def batches(self, epoch: int, start: int) -> Iterator[Any]: ...
    def train_step(self, model: nn.Module, batch: Any, carry: Any) -> StepResult: ...
    def evaluate(self, model: nn.Module) -> float | tuple[float, float]: ...
    def describe(self, loss: float) -> dict[str, float]: ...


class TrainingDiverged(RuntimeError):
    """The loss or the gradient became NaN or infinite."""


@dataclass
class FitResult:
    step: int
    epoch: int
    stopped: str
    """"done", "max_steps", "max_minutes", "solved" (``Task.solved``) or "interrupted"
    (Ctrl-C, after a whole step)."""
    valid_loss: float | None
    best_valid_loss: float | None
    seconds: float
    tokens_per_s: float
    best_score: float | None = None
    """The task's score (``Task.score``) of the best checkpoint, for tasks that have one."""


def detach(state: Any) -> Any:
    """Cut the graph at a window boundary but keep the values (truncated BPTT)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(detach(s) for s in state)


def _with_world_size(extra: dict[str, Any], world_size: int) -> dict[str, Any]:
    """The task's files with the number of processes recorded in config.json's meta."""
    config = extra.get(ckpt.CONFIG_FILE)
    if isinstance(config, dict) and isinstance(config.get("meta"), dict):
        extra[ckpt.CONFIG_FILE] = config | {"meta": config["meta"] | {"world_size": world_size}}
    return extra


def _checked_state(checkpoint: Path) -> dict[str, Any]:
    """state.json, with every field the resume reads checked for its type."""
    state = ckpt.read_json(checkpoint, ckpt.STATE_JSON)
    where = str(checkpoint / ckpt.STATE_JSON)
    for name in ("step", "epoch", "position", "clip_count"):
        value = state.get(name)
        if type(value) is not int or value < 0:
            raise ckpt.CheckpointError(f"{where}: {name} must be an integer >= 0, got {value!r}")
    for name in ("best_valid", "last_valid", "best_score", "last_score"):
        value = state.get(name)
        if value is not None and type(value) not in (int, float):
            raise ckpt.CheckpointError(f"{where}: {name} must be a number or null, got {value!r}")
    optimizer = state.get("optimizer")
    if (
        not isinstance(optimizer, dict)
        or not isinstance(optimizer.get("param_groups"), list)
        or not isinstance(optimizer.get("scalars"), dict)
    ):
        raise ckpt.CheckpointError(
            f"{where}: optimizer must be an object with param_groups and scalars"
        )
    if not isinstance(state.get("schedule"), dict):
        raise ckpt.CheckpointError(f"{where}: schedule must be an object")
    return state


class _NoMetrics:
    """The metrics log of a rank other than 0: rank 0 writes the run's record."""

    def write(self, record: dict[str, Any]) -> None:
        pass

    def flush(self, sync: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


class _StopOnInterrupt:
    """The first Ctrl-C asks the loop to stop after the current step (so the checkpoint
    it writes resumes exactly); a second one aborts at once, without a checkpoint.

    Under torchrun (``several``) the agent answers Ctrl-C by sending its workers SIGINT and
    at once SIGTERM, and kills them some seconds later: there, each of SIGINT and SIGTERM
    only asks for the stop (all ranks agree on it), and the agent's kill is the abort."""

    def __init__(self, say: Callable[[str], None], several: bool = False) -> None:
        self.requested = False
        self.say = say
        self.several = several
        self.previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM) if several else (signal.SIGINT,):
                self.previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            if self.several:
                return
            raise KeyboardInterrupt
        self.requested = True
        self.say(
            "stopping after this step"
            + ("" if self.several else " (Ctrl-C again to abort without a checkpoint)")
        )

    def restore(self) -> None:
        for signum, previous in self.previous.items():
            if previous is not None:
                signal.signal(signum, previous)


class Trainer:
    """Train ``model`` on ``task``; write checkpoints, metrics and plots under ``out_dir``.

    ``extra`` holds the task's JSON files saved in every checkpoint (the resolved config,
    the tokenizer): file name -> JSON-ready data.
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        config: TrainerConfig,
        optim: OptimConfig,
        out_dir: str | Path,
        extra: dict[str, Any] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config = config
        self.dist = distributed.current()
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.task = task
        self.out_dir = Path(out_dir)
        self.extra = _with_world_size(dict(extra or {}), self.dist.world_size)
        self.log = distributed.main_only(log)
        if not self.dist.main:
            # Each rank draws its dropout masks from its own stream; rank 0 keeps the one
            # that one process would use (the model was initialised before, alike on all).
            torch.manual_seed(config.seed + 1_000_003 * self.dist.rank)
        self.optimizer = make_optimizer(optim, model.parameters())
        if not 0 <= config.average < 1:
            raise ValueError(f"trainer.average must be in [0, 1), got {config.average}")
        # Polyak averaging (Polyak & Juditsky 1992), as an exponential moving average:
        # the average is what is validated, saved as the model and used for predictions;
        # the training weights live on in the checkpoint's state for --resume.
        self.average = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.average))
            if config.average
            else None
        )
        total = sum(task.batches_per_epoch(e) for e in range(1, config.epochs + 1))
        if total < 1:
            raise ValueError("the task has no training batches")
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        self.schedule = Schedule(optim, self.total_steps)
        self.step = 0
        self.epoch = 1
        self.position = 0  # batches of the current epoch already trained on
        self.carry: Any = None
        self.clip_count = 0
        self.best_valid: float | None = None
        self.last_valid: float | None = None
        self.best_score: float | None = None  # tasks with a score: the best is chosen by it
        self.last_score: float | None = None
        self._metrics: MetricsLog | _NoMetrics | None = None  # open while fit() runs
        self._allreduce_s = 0.0  # the latest step's gradient all-reduce (several processes)

    def _autocast(self) -> torch.autocast:
        """bf16 autocast for ``--trainer.precision bf16`` (the forward and the loss; the
        backward runs outside it, as torch recommends), else a no-op."""
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"
        )

    @property
    def evaluated_model(self) -> nn.Module:
        """The weights that are validated and saved: the average when averaging."""
        return self.average.module if self.average is not None else self.model

    # --- checkpoints --------------------------------------------------------------

    def state_files(self) -> dict[str, Any]:
        for name, p in self.model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise TrainingDiverged(
                    f"parameter {name} holds NaN or inf values at step {self.step}; "
                    "refusing to write them to a checkpoint"
                )
        opt_tensors, opt_json = ckpt.optimizer_to_files(self.optimizer)
        tensors = opt_tensors | ckpt.rng_tensors() | ckpt.flatten_state(self.carry)
        if self.average is not None:
            tensors |= {_TRAINING_WEIGHTS + k: v for k, v in ckpt.model_tensors(self.model).items()}
            tensors[_AVERAGED_STEPS] = self.average.n_averaged
        state: dict[str, Any] = {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "clip_count": self.clip_count,
            "best_valid": self.best_valid,
            "last_valid": self.last_valid,
            "best_score": self.best_score,
            "last_score": self.last_score,
            "schedule": self.schedule.state_dict(),
            "optimizer": opt_json,
            "world_size": self.dist.world_size,
        }
        if distributed.run_id() is not None:
            state["run_id"] = distributed.run_id()  # what a job torchrun restarts looks for
        return {
            ckpt.MODEL_FILE: ckpt.model_tensors(self.evaluated_model),
            ckpt.STATE_TENSORS: tensors,
            ckpt.STATE_JSON: state,
            **self.extra,
        }

    def save(self, name: str = "last") -> Path:
        """Write a checkpoint (rank 0, holding every rank's RNG and carried state under
        ``rank<r>.``); every rank calls it and returns once it is on disk."""
        # The log reaches the disk before the checkpoint does, so a run killed after this
        # checkpoint and resumed from it has every step's record up to it (no gaps).
        if self._metrics is not None:
            self._metrics.flush(sync=True)
        files = self.state_files()
        if not self.dist.active:
            return ckpt.write_atomic(self.out_dir / name, files)
        ranks = distributed.gather_tensors(ckpt.rng_tensors() | ckpt.flatten_state(self.carry))
        for rank, own in enumerate(ranks or [], start=0):
            if rank:
                files[ckpt.STATE_TENSORS] |= {f"rank{rank}.{k}": v for k, v in own.items()}
        path = self.out_dir / name
        distributed.from_main(lambda: str(ckpt.write_atomic(path, files)))
        return path

    def resume(self, checkpoint: str | Path) -> None:
        """Continue exactly where ``checkpoint`` stopped: weights, optimiser, schedule,
        RNG, position in the epoch and the carried recurrent state."""
        path = ckpt.resolve(checkpoint, prefer=("last", "best"))
        with distributed.lock(self.out_dir):
            self._resume(path)

    def _resume(self, path: Path) -> None:
        state = _checked_state(path)
        saved = ckpt.read_tensors(path, ckpt.MODEL_FILE)
        tensors = ckpt.read_tensors(path, ckpt.STATE_TENSORS)
        training = {
            k[len(_TRAINING_WEIGHTS) :]: v
            for k, v in tensors.items()
            if k.startswith(_TRAINING_WEIGHTS)
        }
        # A run that averaged saved the average as the model and its training weights in
        # the state; one that did not, the training weights as the model. Turning
        # averaging on at resume starts the average from the saved weights.
        ckpt.load_model_tensors(self.model, training or saved)
        if self.average is not None:
            ckpt.load_model_tensors(self.average.module, saved)
            self.average.n_averaged.fill_(int(tensors[_AVERAGED_STEPS]) if training else 0)
        own, same_world = self._own_state(path, state, tensors)
        try:  # the optimiser's, the RNG's and the schedule's own checks, on foreign values
            ckpt.optimizer_from_files(self.optimizer, tensors, state["optimizer"])
            if own is not None:
                ckpt.restore_rng(own)
            self.schedule.load_state_dict(state["schedule"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
            raise ckpt.CheckpointError(
                f"{str(path)!r} cannot be resumed: its optimiser, RNG or schedule state does "
                f"not fit this run ({type(error).__name__}: {error})"
            ) from None
        self.carry = (
            ckpt.unflatten_state({k: v.to(self.device) for k, v in own.items()})
            if own is not None and same_world
            else None
        )
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.clip_count = state["clip_count"]
        self.best_valid, self.last_valid = state["best_valid"], state["last_valid"]
        self.best_score, self.last_score = state.get("best_score"), state.get("last_score")
        self._keep_best_of(path)
        if self.dist.main:
            MetricsLog.truncate(self.out_dir / "metrics.jsonl", self.step)

    def _own_state(
        self, path: Path, state: dict[str, Any], tensors: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor] | None, bool]:
        """This rank's RNG and carried state in a checkpoint (None: none saved for it)
        and whether it was written by as many processes as this run has. A run resumed
        with another world size continues from the same step and position in the epoch,
        with the carried state reset and new random streams on the ranks it lacked."""
        saved = state.get("world_size", 1)
        if type(saved) is not int or saved < 1:
            raise ckpt.CheckpointError(
                f"{str(path / ckpt.STATE_JSON)!r}: world_size must be an integer >= 1, "
                f"got {saved!r}"
            )
        rank = self.dist.rank
        if rank == 0:
            own: dict[str, Tensor] | None = tensors
        else:
            prefix = f"rank{rank}."
            found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            own = found or None
        if saved != self.dist.world_size and self.dist.main:
            carried = any(k == "carry" or k.startswith("carry.") for k in tensors)
            notify(
                f"{str(path)!r} was written by {saved} process(es) and resumes with "
                f"{self.dist.world_size}: training continues from step {state['step']} "
                "(the same position in the epoch)"
                + ("; the carried recurrent state starts afresh" if carried else "")
            )
        return own, saved == self.dist.world_size

    def _keep_best_of(self, resumed: Path) -> None:
        """Take the best figures from ``best/`` when it is newer than the checkpoint resumed
        from (a kill between saving best/ and last/), so a resumed run never replaces
        ``best/`` with a worse model."""
        best = self.out_dir / "best"
        if resumed == best or not (best / ckpt.STATE_JSON).is_file():
            return
        try:
            state = ckpt.read_json(best, ckpt.STATE_JSON)
        except ckpt.CheckpointError:
            return  # a damaged best/ tells nothing; the one resumed from is checked
        loss, score = state.get("best_valid"), state.get("best_score")
        if not isinstance(loss, int | float) or isinstance(loss, bool):
            return
        if score is not None and (not isinstance(score, int | float) or isinstance(score, bool)):
            return
        if score is not None:
            if self.best_score is None or float(score) > self.best_score:
                self.best_valid, self.best_score = float(loss), float(score)
        elif self.best_valid is None or float(loss) < self.best_valid:
            self.best_valid = float(loss)

    # --- the loop -----------------------------------------------------------------

    def _diverged(self, what: str, value: float) -> TrainingDiverged:
        return TrainingDiverged(
            f"training diverged at step {self.step + 1} (epoch {self.epoch}): {what} is "
            f"{value}. The weights were not updated and no checkpoint holds non-finite "
            "values. Try gradient clipping (--trainer.clip_norm 1) or a lower learning "
            "rate (--optim.lr)."
        )

    def train_step(self, batch: Any) -> tuple[float, int, float, bool]:
        """One optimiser step -> (loss, count, pre-clip gradient norm, clipped?); under
        torchrun the loss and the count are those of the global batch."""
        if self.dist.active:
            loss, count, lr_scale, carry = self._distributed_backward(batch)
        else:
            with self._autocast():
                result = self.task.train_step(self.model, batch, self.carry)
            loss, count = float(result.loss.detach()), result.count
            if not math.isfinite(loss):
                raise self._diverged("the loss", loss)
            self.optimizer.zero_grad(set_to_none=True)
            result.loss.backward()
            lr_scale, carry = result.lr_scale, result.carry
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm, clipped = clip_gradients(params, self.config.clip_norm, self.config.clip_value)
        if not math.isfinite(norm):
            raise self._diverged("the gradient norm", norm)
        set_lr(self.optimizer, self.schedule.lr(self.epoch, self.step) * lr_scale)
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        self.carry = detach(carry)
        self.step += 1
        self.position += 1
        self.clip_count += clipped
        return loss, count, norm, clipped

    def _distributed_backward(self, batch: Any) -> tuple[float, int, float, Any]:
        """This rank's share of a step: forward and backward of its summed loss, then the
        gradients, losses and counts summed over the ranks (``distributed.reduce_gradients``)
        -> (global mean loss, global count, learning-rate scale, this rank's carry). A rank
        whose share is empty (``batch`` None) contributes zeros and keeps its carry."""
        self.optimizer.zero_grad(set_to_none=True)
        if batch is None:
            local, weight, count, lr_scale, carry = 0.0, 0.0, 0, 0.0, self.carry
        else:
            with self._autocast():
                result = self.task.train_step(self.model, batch, self.carry)
            count, lr_scale, carry = result.count, result.lr_scale, result.carry
            weight = float(count if result.weight is None else result.weight)
            local = float(result.loss.detach()) * weight
            if math.isfinite(local):
                (result.loss * weight).backward()
        params = list(self.model.parameters())
        started = time.perf_counter()
        total, weights, scales, ranks_with_data, counts = distributed.reduce_gradients(
            params, [local, weight, lr_scale, float(batch is not None), count]
        )
        # the all-reduce and the wait for the slowest rank: its share of the step's time
        self._allreduce_s = time.perf_counter() - started
        loss = total / max(weights, 1e-30)
        if not math.isfinite(loss):  # on every rank alike: the sum saw the NaN
            raise self._diverged("the loss", loss)
        return loss, round(counts), scales / max(ranks_with_data, 1.0), carry

    @property
    def _score_name(self) -> str:
        """The name of the score a task's ``evaluate`` returns beside its loss."""
        return str(getattr(self.task, "score_name", "score"))

    def validate(self, observe: bool) -> float:
        """Validation loss (and the task's score, if it has one); ``observe`` feeds the
        loss to the schedule (only at epoch ends, so a run stopped mid-epoch and resumed
        sees the same schedule). Saves "best" when the score improved (on a tie, when the
        loss did), or for a task without a score, when the loss did."""
        loss, score = distributed.from_main(self._evaluate)  # rank 0's, on every rank
        if observe:
            self.schedule.observe(loss)
        self.last_valid, self.last_score = loss, score
        if score is not None:  # ties (a tagger at 100 F1 on easy data) go to the lower loss
            better = (
                self.best_score is None
                or score > self.best_score
                or (
                    score == self.best_score and (self.best_valid is None or loss < self.best_valid)
                )
            )
        else:
            better = self.best_valid is None or loss < self.best_valid
        if better:
            self.best_valid, self.best_score = loss, score
            self.save("best")
        return loss

    def _evaluate(self) -> tuple[float, float | None]:
        """The task's validation of the evaluated model -> (loss, score or None)."""
        model = self.evaluated_model
        model.eval()
        with torch.no_grad(), self._autocast():
            result = self.task.evaluate(model)
        model.train()
        if isinstance(result, tuple):
            return float(result[0]), float(result[1])
        return float(result), None

    def _valid_text(self, loss: float) -> str:
        """'valid loss 1.2345 (ppl ...)' and ', F1 87.02' for a task with a score."""
        text = f"valid loss {loss:.4f}{self._describe(loss)}"
        if self.last_score is not None:
            text += f", {self._score_name} {self.last_score:.2f}"
        return text

    def _describe(self, loss: float) -> str:
        """' (ppl 123.4)' or '' when the task has no other way to show a loss."""
        text = " ".join(f"{k} {v:.3f}" for k, v in self.task.describe(loss).items())
        return f" ({text})" if text else ""

    def _task_record(self) -> dict[str, float]:
        """The task's own figures of the latest validation (``Task.valid_metrics``; rank 0
        validates, so the other ranks have none)."""
        valid_metrics = getattr(self.task, "valid_metrics", None)
        return dict(valid_metrics()) if valid_metrics is not None and self.dist.main else {}

    def _world_record(self) -> dict[str, int]:
        """{"world_size": W} in the records of a run of several processes."""
        return {"world_size": self.dist.world_size} if self.dist.active else {}

    def _score_record(self) -> dict[str, float]:
        """{"F1": 87.02} for the metrics log, {} for a task without a score."""
        if self.last_score is None:
            return {}
        return {self._score_name: self.last_score}

    @property
    def _unit(self) -> str:
        """What ``StepResult.count`` counts, for the rate: tokens unless the task says."""
        return str(getattr(self.task, "unit", "tok"))

    def fit(self) -> FitResult:
        """Train until the epochs (or ``max_steps`` / ``max_minutes``) are done, holding
        the run folder's lock (``rnnkit.train.run_folder``)."""
        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        if self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        with distributed.lock(self.out_dir):
            return self._fit()

    def _fit(self) -> FitResult:
        from tqdm.auto import tqdm

        c = self.config
        main = self.dist.main
        if main:  # left by a writer killed mid-checkpoint
            run_folder.remove_temporaries(self.out_dir)
        metrics: MetricsLog | _NoMetrics
        metrics = self._metrics = (
            MetricsLog(self.out_dir / "metrics.jsonl") if main else _NoMetrics()
        )
        if main and c.precision == "bf16" and self.device.type == "cpu" and not bf16_native():
            notify(
                "this CPU has no bf16 instructions: --trainer.precision bf16 computes the "
                "recurrent layers' and the LM output layer's products as fp32 products of "
                "bf16-rounded operands (the same values, no speedup), and torch's own bf16 "
                "products (other layers under autocast) run far slower than fp32 here; "
                "--trainer.precision fp32 is the faster choice on this machine"
            )
        if self.step == 0:
            # A checkpoint before the first step: a run killed at any moment from here on
            # can be resumed (and is never mistaken for leftovers to clean up).
            self.save("last")
        start_time, tokens, stopped = time.perf_counter(), 0, "done"
        deadline = start_time + 60 * c.max_minutes if c.max_minutes else math.inf
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (c.progress and main),
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )
        say = distributed.main_only(bar.write)
        smooth: float | None = None
        interrupt = _StopOnInterrupt(say, several=self.dist.active)
        self.model.train()
        try:
            while self.epoch <= c.epochs and stopped == "done":
                for batch in self.task.batches(self.epoch, self.position):
                    # a stop one rank decides is every rank's (the same step for all)
                    interrupted, late = distributed.any_rank(
                        [interrupt.requested, time.perf_counter() > deadline]
                    )
                    if interrupted:
                        stopped = "interrupted"
                        break
                    if c.max_steps is not None and self.step >= c.max_steps:
                        stopped = "max_steps"
                        break
                    if late:
                        stopped = "max_minutes"
                        break
                    loss, count, norm, clipped = self.train_step(batch)
                    tokens += count
                    rate = tokens / max(time.perf_counter() - start_time, 1e-9)
                    smooth = loss if smooth is None else 0.98 * smooth + 0.02 * loss
                    metrics.write(
                        {
                            "kind": "train",
                            "step": self.step,
                            "epoch": self.epoch,
                            "loss": loss,
                            "grad_norm": norm,
                            "clipped": clipped,
                            "lr": self.optimizer.param_groups[0]["lr"],
                            "tokens_per_s": rate,
                            "elapsed_s": time.perf_counter() - start_time,
                            **self._world_record(),
                            **({"allreduce_s": self._allreduce_s} if self.dist.active else {}),
                        }
                    )
                    bar.update(1)
                    if self.step % 10 == 0 or self.step == self.total_steps:
                        bar.set_postfix_str(
                            f"epoch {self.epoch} loss {smooth:.3f}{self._describe(smooth)} "
                            f"{rate:,.0f} {self._unit}/s clipped {self.clip_count}",
                            refresh=False,
                        )
                    if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                        self.save("last")
                    if self.step % 50 == 0:
                        metrics.flush()  # so `tail metrics.jsonl` follows a long epoch
                else:
                    expected = self.task.batches_per_epoch(self.epoch)
                    if self.position != expected:  # the iterator disagrees: a task bug
                        raise RuntimeError(
                            f"the task gave {self.position} batches in epoch {self.epoch} "
                            f"but batches_per_epoch({self.epoch}) is {expected}"
                        )
                    # The next epoch starts from a fresh state; checkpoints taken now
                    # (best and last) resume there.
                    finished = self.epoch
                    self.epoch, self.position, self.carry = finished + 1, 0, None
                    valid = self.validate(observe=True)
                    metrics.write(
                        {
                            **self._task_record(),
                            **self._world_record(),
                            "kind": "valid",
                            "step": self.step,
                            "epoch": finished,
                            "loss": valid,
                            **self._score_record(),
                            "clip_count": self.clip_count,
                            "elapsed_s": time.perf_counter() - start_time,
                        }
                    )
                    rate = tokens / (time.perf_counter() - start_time)
                    say(
                        f"epoch {finished} step {self.step}: {self._valid_text(valid)}, "
                        f"{rate:,.0f} {self._unit}/s, clipped {self.clip_count}/{self.step} steps"
                    )
                    self.save("last")
                    if main:
                        plot(self.out_dir / "metrics.jsonl", self.out_dir / "loss.png")
                    solved = getattr(self.task, "solved", None)
                    if solved is not None and distributed.from_main(solved):
                        stopped = "solved"
            if stopped not in ("done", "solved"):
                # Stopped between two steps: checkpoint the exact position for --resume,
                # after the validation, so the checkpoint knows the best loss so far.
                if self.position and stopped != "interrupted":
                    valid = self.validate(observe=False)
                    metrics.write(
                        {
                            **self._task_record(),
                            **self._world_record(),
                            "kind": "valid",
                            "step": self.step,
                            "epoch": self.epoch,
                            "loss": valid,
                            **self._score_record(),
                            "partial_epoch": True,
                            "elapsed_s": time.perf_counter() - start_time,
                        }
                    )
                    say(f"stopped ({stopped}) at step {self.step}: {self._valid_text(valid)}")
                self.save("last")
                if stopped == "interrupted":
                    say(f"interrupted at step {self.step}; checkpoint in {self.out_dir / 'last'}")
        finally:
            interrupt.restore()
            bar.close()
            self._metrics = None
            metrics.close()
        if self.step and main:
            plot(self.out_dir / "metrics.jsonl", self.out_dir / "loss.png")
        seconds = time.perf_counter() - start_time
        return FitResult(
            self.step,
            self.epoch,
            stopped,
            self.last_valid,
            self.best_valid,
            seconds,
            tokens / max(seconds, 1e-9),
            self.best_score,
        )
