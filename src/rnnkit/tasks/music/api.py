"""Polyphonic music modelling as a trainer task, generation, and their Python API.

    from rnnkit.tasks.music import api as music
    run = music.train(music.configure(data={"path": "jsb-chorales-quarter.json"}))
    rolls = music.generate_from(run.out_dir, steps=64)

Batches are whole chorales, padded; the loss is the NLL per time step (summed over the
pitches, averaged over steps), in nats, as Chung et al. 2014 report it. Their setting
is the default: one layer of about 20k parameters, RMSProp, gradient norm rescaled to 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import rnnkit
from rnnkit.common import config as cfg
from rnnkit.common.io import atomic_savefig
from rnnkit.data.padded import batches
from rnnkit.tasks.music.config import MusicConfig, MusicSettings, defaults
from rnnkit.tasks.music.data import Chorale, load_chorales, piano_roll
from rnnkit.tasks.music.model import MusicModel, generate, nll_per_step
from rnnkit.train import checkpoint as ckpt
from rnnkit.train import distributed, pretrained
from rnnkit.train.trainer import FitResult, StepResult, Trainer


def configure(
    file: str | Path | None = None, overrides: tuple[str, ...] = (), **sections: Any
) -> MusicSettings:
    return cfg.merge(cfg.resolve(defaults(), file, overrides), sections, "configure()")


def _batch(rolls: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Chorale rolls -> (inputs [T, B, P], targets [T, B, P], lengths [B]); step t
    predicts step t + 1."""
    lengths = torch.tensor([r.shape[0] - 1 for r in rolls])
    T, P = int(lengths.max()), rolls[0].shape[1]
    inputs, targets = torch.zeros(T, len(rolls), P), torch.zeros(T, len(rolls), P)
    for b, r in enumerate(rolls):
        inputs[: len(r) - 1, b], targets[: len(r) - 1, b] = r[:-1], r[1:]
    return inputs, targets, lengths


class MusicTask:
    unit = "steps"  # what StepResult.count counts

    def __init__(self, train: list[Tensor], valid: list[Tensor], batch_size: int, seed: int):
        self.train, self.valid = train, valid
        self.batch_size, self.seed = batch_size, seed

    def batches_per_epoch(self, epoch: int) -> int:
        return math.ceil(len(self.train) / self.batch_size)

    def batches(self, epoch: int, start: int) -> Iterator[Any]:
        for batch in batches(len(self.train), self.batch_size, self.seed, epoch, start):
            rows = distributed.share(batch)  # under torchrun, this process's rows
            yield _batch([self.train[r] for r in rows]) if rows else None

    def _loss(self, model: torch.nn.Module, batch: Any) -> tuple[Tensor, int]:
        device = next(model.parameters()).device
        inputs, targets, lengths = (x.to(device) for x in batch)
        logits, _ = model(inputs, lengths=lengths)
        mask = (torch.arange(inputs.shape[0], device=device)[:, None] < lengths[None]).float()
        return nll_per_step(logits, targets, mask)

    def train_step(self, model: torch.nn.Module, batch: Any, carry: Any) -> StepResult:
        total, steps = self._loss(model, batch)
        return StepResult(total / steps, steps)

    def evaluate(self, model: torch.nn.Module) -> float:
        return nll(model, self.valid)

    def describe(self, loss: float) -> dict[str, float]:
        return {}


@torch.no_grad()
def nll(model: torch.nn.Module, rolls: list[Tensor]) -> float:
    """NLL per time step over a set of chorales (nats)."""
    task = MusicTask([], [], 1, 0)
    total, steps = 0.0, 0
    for start in range(0, len(rolls), 32):
        t, n = task._loss(model, _batch(rolls[start : start + 32]))
        total, steps = total + float(t), steps + n
    return total / steps


def _rolls(chorales: list[Chorale], model_c: MusicConfig) -> list[Tensor]:
    rolls = [piano_roll(c, model_c.low, model_c.high) for c in chorales if len(c) >= 2]
    if not rolls:
        raise ValueError("no chorale has the two or more steps needed to predict one")
    return rolls


@dataclass
class MusicRun:
    out_dir: Path
    result: FitResult
    train_nll: float
    valid_nll: float
    parameters: int


def train(sections: MusicSettings | None = None, log: Callable[[str], None] = print) -> MusicRun:
    """Train a music model; report train and validation NLL per step of the best one."""
    sections = sections or defaults()
    with (
        distributed.session(sections.trainer.device, sections.trainer.threads),
        distributed.claim(sections.trainer.out) as (out_dir, _),
    ):
        return _train(sections, out_dir, distributed.main_only(log))


def _train(sections: MusicSettings, out_dir: Path, log: Callable[[str], None]) -> MusicRun:
    """``train`` in the claimed and locked run folder ``out_dir``."""
    model_c = sections.model
    data_c = sections.data
    trainer_c = sections.trainer
    if data_c.path is None:
        raise ValueError("data.path is required: a chorales JSON file (--data.path FILE)")
    splits = load_chorales(data_c.path)
    for split in (data_c.train_split, data_c.valid_split):
        if split not in splits:
            raise ValueError(f"{data_c.path} has no split {split!r}; it has {sorted(splits)}")
    torch.manual_seed(trainer_c.seed)
    train_rolls = _rolls(splits[data_c.train_split], model_c)
    valid_rolls = _rolls(splits[data_c.valid_split], model_c)
    model = MusicModel(model_c)
    meta = {"task": "music", "rnnkit_version": rnnkit.__version__}
    extra = {ckpt.CONFIG_FILE: cfg.to_dict(sections) | {"meta": meta}}
    log(
        f"training a {model_c.cell} music model ({model.num_parameters():,} parameters) on "
        f"{len(train_rolls)} chorales ({len(valid_rolls)} validation); run in {out_dir}"
    )
    task = MusicTask(train_rolls, valid_rolls, data_c.batch_size, trainer_c.seed)
    result = Trainer(model, task, trainer_c, sections.optim, out_dir, extra, log).fit()

    def score_best() -> list[float]:  # rank 0's, on every rank
        best = load(out_dir)
        return [nll(best, train_rolls), nll(best, valid_rolls)]

    train_nll, valid_nll = distributed.from_main(score_best)
    return MusicRun(out_dir, result, train_nll, valid_nll, model.num_parameters())


def load(path: str | Path, which: str = "best") -> MusicModel:
    return ckpt.load_run(path, which, _load)


def _load(checkpoint: Path) -> MusicModel:
    record = pretrained.read(checkpoint, "music", ())
    _, sections = ckpt.open_checkpoint(checkpoint, "music", defaults())
    model = ckpt.build_model(checkpoint, lambda: MusicModel(sections.model), sections.model)
    assert isinstance(model, MusicModel)
    model.pretrained = record
    return model.eval()


def _compose(model: MusicModel) -> pretrained.Pretrained:
    """``MusicModel.save_pretrained`` needs no parts: the pitch range is in its config."""
    return pretrained.compose(model, "music", defaults())


PRETRAINED = pretrained.Adapter("music", _load, _compose)


def evaluate_file(run: str | Path, path: str | Path, split: str | None = None) -> dict[str, Any]:
    """NLL per time step (nats) of a trained model on one split of a chorales JSON file:
    ``split``, else "test" when the file has one, else its only split."""
    model = load(run)
    splits = load_chorales(path)
    if split is None:
        split = "test" if "test" in splits or len(splits) != 1 else next(iter(splits))
    if split not in splits:
        raise ValueError(f"{path} has no split {split!r}; it has {sorted(splits)}")
    rolls = _rolls(splits[split], model.config)
    steps = sum(r.shape[0] - 1 for r in rolls)
    return {"split": split, "chorales": len(rolls), "steps": steps, "nll": nll(model, rolls)}


def generate_from(
    path: str | Path,
    steps: int,
    primer: Chorale | None = None,
    **options: Any,
) -> tuple[MusicModel, Tensor]:
    """(model, rolls [steps, num_samples, P]) sampled from a trained model."""
    model = load(path)
    c = model.config
    roll = None if primer is None else piano_roll(primer, c.low, c.high)
    return model, generate(model, steps, roll, **options)


def plot_roll(roll: Tensor, low: int, path: str | Path, title: str = "") -> None:
    """A piano-roll PNG: time across, pitch up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, roll.shape[0] / 8), 4))
    ax.imshow(
        roll.T.numpy(),
        origin="lower",
        aspect="auto",
        cmap="Greys",
        interpolation="nearest",
        extent=(0, roll.shape[0], low - 0.5, low + roll.shape[1] - 0.5),
    )
    ax.set_xlabel("step")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
