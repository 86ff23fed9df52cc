"""Pretrained folders of any task (``rnnkit.train.pretrained``), the task read from the
folder's config.json (``meta.task``).

    model = rnnkit.load_pretrained("my-model")        # the task's model class, eval mode
    export_pretrained("runs/lm", "my-model")          # a run's best/ as a pretrained folder

Each task's model class is imported on first use, so ``rnnkit.tasks`` stays torch-free.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from rnnkit.train import checkpoint as ckpt
from rnnkit.train import pretrained

MODELS = {
    "lm": ("rnnkit.tasks.lm.model", "LanguageModel"),
    "classify": ("rnnkit.tasks.classify.model", "Classifier"),
    "tag": ("rnnkit.tasks.tag.model", "Tagger"),
    "seq2seq": ("rnnkit.tasks.seq2seq.model", "Seq2Seq"),
    "music": ("rnnkit.tasks.music.model", "MusicModel"),
    "forecast": ("rnnkit.tasks.forecast.model", "Forecaster"),
}
"""Task name (config.json's ``meta.task``) -> (module, model class)."""


def model_class(task: str) -> Any:
    """The model class of ``task``."""
    if task not in MODELS:
        raise ValueError(f"unknown task {task!r}; rnnkit's tasks are {', '.join(MODELS)}")
    module, name = MODELS[task]
    return getattr(importlib.import_module(module), name)


def task_of(path: str | Path, which: str = "best") -> str:
    """The task of a pretrained folder, a checkpoint or a run folder (its ``which``)."""
    prefer = ("best", "last") if which == "best" else ("last", "best")
    checkpoint = ckpt.resolve(pretrained.local_folder(path), prefer=prefer)
    meta = ckpt.read_json(checkpoint, ckpt.CONFIG_FILE).get("meta")
    task = meta.get("task") if isinstance(meta, dict) else None
    if task not in MODELS:
        raise ckpt.CheckpointError(
            f"{str(checkpoint / ckpt.CONFIG_FILE)!r} holds a {task!r} model; rnnkit's tasks "
            f"are {', '.join(MODELS)}"
        )
    return str(task)


def load_pretrained(path: str | Path, *, which: str = "best") -> Any:
    """The model of a pretrained folder (or of a run folder's ``which`` checkpoint) as its
    task's class would load it: ``<ModelClass>.from_pretrained(path)``. Local folders only."""
    return model_class(task_of(path, which)).from_pretrained(path, which=which)


def export_pretrained(
    run: str | Path, out: str | Path, *, which: str = "best", force: bool = False
) -> Path:
    """Save a run's ``which`` checkpoint (or any checkpoint) as a pretrained folder
    ``out``: weights, config and the task's files as the run recorded them, without the
    training state. ``out`` is refused before any loading when it exists (unless
    ``force``) or is a link. Returns ``out``."""
    pretrained.check_target(out, force)
    model = load_pretrained(run, which=which)
    saved: Path = model.save_pretrained(out, force=force)
    return saved
