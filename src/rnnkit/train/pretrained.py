"""``save_pretrained`` / ``from_pretrained``: a task model as a folder in the layout of the
Hugging Face Hub (safetensors weights + JSON config, as ``huggingface_hub``'s
``PyTorchModelHubMixin`` writes), read back from a local folder by the checked loader of
run checkpoints (``rnnkit.train.checkpoint``).

    my-model/
        model.safetensors   the weights (tied tensors once), as in a run checkpoint
        config.json         the run's sections {section: {field: value}} but trainer and
                            optim (how it was trained stays with the run), and "meta":
                            task, format "rnnkit-pretrained", format_version,
                            rnnkit_version, and what the task records (the LM's vocab_size,
                            the forecaster's columns)
        tokenizer.json ...  the task's JSON files: tokenizers, labels, tags, scaler
        checksums.json      the SHA-256 of model.safetensors

So a pretrained folder is a run checkpoint without its training state: each task's
``load`` (and ``predict``, ``sample``, ``rnnkit eval``, ...) reads it as it reads ``best/``,
and ``from_pretrained`` reads a run folder (its ``best/``) as well.

Saving writes the folder beside the target and swaps it in whole (``atomic_dir``); it
refuses a link, a file, and a non-empty folder unless ``force``, and even with ``force`` a
folder that ``save_pretrained`` did not write (a run folder, a home directory). Before the
swap the new folder is loaded back by the task's loader, so a folder that is written
always loads (for a moment the model is twice in memory). Loading reads only a local path:
a missing one is an error, never a download (rnnkit makes no network call).

A task model inherits ``PretrainedMixin`` and names its ``Adapter``: the task, its JSON
files, the task's loader of one checkpoint directory, and how its parts (tokenizer,
labels, ...) become the record to write (``compose``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import torch
from torch import nn

from rnnkit import __version__
from rnnkit.common import config as cfg
from rnnkit.common.io import UnsafePathError, atomic_dir, previous_of
from rnnkit.train import checkpoint as ckpt
from rnnkit.train.checkpoint import CONFIG_FILE, CheckpointError

FORMAT = "rnnkit-pretrained"
FORMAT_VERSION = 1
TRAINING_SECTIONS = ("trainer", "optim")
"""Sections of a run's config that describe how it trained, not the model: left out."""

M = TypeVar("M", bound="PretrainedMixin")


@dataclasses.dataclass
class Pretrained:
    """What a model is saved with besides its weights: the task, config.json's sections
    (no trainer or optim) and meta, and the task's JSON files (file name -> object).
    A task's loader sets it as ``model.pretrained``, so that ``save_pretrained`` writes
    the same folder again without being handed the tokenizer."""

    task: str
    sections: dict[str, Any]
    meta: dict[str, Any]
    files: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Adapter:
    """A task's side of save and load."""

    task: str
    load: Callable[[Path], nn.Module]
    """The task's checked loader of one checkpoint directory: the model, ``pretrained`` set."""
    compose: Callable[..., Pretrained]
    """(model, **parts) -> the record to write (``rnnkit.train.pretrained.compose``)."""


def read(checkpoint: Path, task: str, files: Sequence[str]) -> Pretrained:
    """The record of a ``task`` checkpoint directory (a pretrained folder or a run's
    ``best/``): its config.json and the task's JSON ``files``, each size-bounded. A task's
    loader reads it first: a folder of another task, or written in a newer format, is
    refused before anything in it is interpreted."""
    saved = ckpt.read_json(checkpoint, CONFIG_FILE)
    meta = saved.get("meta")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{str(checkpoint / CONFIG_FILE)!r} is damaged: it has no meta table")
    if meta.get("task") != task:
        raise CheckpointError(
            f"{checkpoint} holds a {meta.get('task')!r} model, not a {task!r} one"
        )
    version = meta.get("format_version", FORMAT_VERSION)
    if meta.get("format", FORMAT) != FORMAT or type(version) is not int:
        raise CheckpointError(
            f"{str(checkpoint / CONFIG_FILE)!r} has format {meta.get('format')!r} version "
            f"{version!r}; rnnkit reads {FORMAT!r} up to version {FORMAT_VERSION}"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{str(checkpoint / CONFIG_FILE)!r} was written in format version {version} by a "
            f"newer rnnkit; this one ({__version__}) reads up to version {FORMAT_VERSION}"
        )
    sections = {k: v for k, v in saved.items() if k != "meta" and k not in TRAINING_SECTIONS}
    return Pretrained(task, sections, dict(meta), {n: ckpt.read_json(checkpoint, n) for n in files})


def compose(
    model: nn.Module,
    task: str,
    settings: Any,
    *,
    files: Mapping[str, tuple[str, Any]] | None = None,
    sections: Mapping[str, Any] | None = None,
    meta: Mapping[str, tuple[str, Any]] | None = None,
) -> Pretrained:
    """The record to save ``model`` with: the task's default ``settings`` (but trainer
    and optim), then the record the model was loaded with, then the model's own config as
    the ``model`` section, then the parts given. ``files`` and ``meta`` map a file name or
    meta key to (the keyword that gives it, its JSON or None: the loaded record's);
    ``sections`` maps a section to a config dataclass or a dict of fields (None: keep)."""
    base = getattr(model, "pretrained", None)
    base = base if isinstance(base, Pretrained) and base.task == task else None
    out = {k: v for k, v in cfg.to_dict(settings).items() if k not in TRAINING_SECTIONS}
    out |= base.sections if base else {}
    out["model"] = dataclasses.asdict(cast(Any, model).config)
    for name, value in (sections or {}).items():
        if value is not None:
            fields = value if isinstance(value, Mapping) else dataclasses.asdict(value)
            out[name] = {**out.get(name, {}), **fields}
    cfg.from_dict(settings, out, f"{type(model).__name__}.save_pretrained")  # typed and checked

    def given(kind: str, entries: Mapping[str, tuple[str, Any]], loaded: dict) -> dict:
        found = {}
        for name, (keyword, value) in entries.items():
            if value is None and name not in loaded:
                raise ValueError(
                    f"{type(model).__name__}.save_pretrained needs {keyword}= (the model was not "
                    f"loaded with a {kind} {name!r} to save again)"
                )
            found[name] = loaded[name] if value is None else value
        return found

    saved_files = given("file", files or {}, base.files if base else {})
    loaded_meta = base.meta if base else {}
    saved_meta = loaded_meta | given("meta entry", meta or {}, loaded_meta)
    return Pretrained(task, out, saved_meta, saved_files)


def check_target(target: str | Path, force: bool = False) -> Path:
    """The folder ``save_pretrained`` may write: no link, no file, and no non-empty
    folder unless ``force``, and then only one that ``save_pretrained`` wrote."""
    target = Path(target)
    if target.is_symlink():
        raise UnsafePathError(f"save_pretrained: {str(target)!r} is a symbolic link; name a folder")
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"save_pretrained: {str(target)!r} is a file; name a folder")
    if target.is_dir() and any(target.iterdir()):
        if not force:
            raise FileExistsError(
                f"save_pretrained: {str(target)!r} exists and is not empty; pass force=True "
                "(--force) to replace it"
            )
        if not _written_here(target):
            raise FileExistsError(
                f"save_pretrained: {str(target)!r} holds files that save_pretrained did not "
                "write (a run folder?); force replaces only a pretrained folder: name a new one"
            )
    return target


def _written_here(folder: Path) -> bool:
    try:
        meta = ckpt.read_json(folder, CONFIG_FILE).get("meta")
    except CheckpointError:
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def save(
    model: nn.Module, target: str | Path, record: Pretrained, adapter: Adapter, force: bool
) -> Path:
    """Write ``model`` and ``record`` as a pretrained folder at ``target`` (atomically),
    after loading the new folder back with the task's loader."""
    target = check_target(target, force)
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"save_pretrained: the model holds NaN or inf in {name}")
    meta = record.meta | {
        "task": record.task,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "rnnkit_version": __version__,
    }
    files = {
        ckpt.MODEL_FILE: ckpt.model_tensors(model),
        CONFIG_FILE: record.sections | {"meta": meta},
        **record.files,
    }
    with atomic_dir(target) as tmp:
        ckpt.write_files(tmp, files)
        try:
            adapter.load(tmp)
        except (CheckpointError, cfg.ConfigError) as error:
            why = str(error).replace(str(tmp), str(target))
            raise ValueError(
                f"{type(model).__name__}.save_pretrained: the parts given do not fit the "
                f"model, nothing was written ({why})"
            ) from None
    return target


def local_folder(path: str | Path) -> Path:
    """``path`` when it is a local folder (or ``atomic_dir`` is swapping one in), else the
    error: rnnkit never downloads."""
    path = Path(path)
    if path.is_dir() or previous_of(path).is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{str(path)!r} is a file; from_pretrained reads a folder")
    raise CheckpointError(
        f"{str(path)!r} is not a local folder: from_pretrained reads a folder written by "
        "save_pretrained (or a run folder) and never downloads; fetch a Hub repository "
        "first (huggingface_hub.snapshot_download) and pass its folder"
    )


class PretrainedMixin:
    """``save_pretrained`` and ``from_pretrained`` for a task model (an ``nn.Module``
    with a ``config`` dataclass); the model class names its ``Adapter``."""

    pretrained: Pretrained | None = None
    """The record the model was loaded with (None for a model built in Python)."""

    @classmethod
    def pretrained_adapter(cls) -> Adapter:
        raise NotImplementedError(f"{cls.__name__} names no pretrained adapter")

    def save_pretrained(self, directory: str | Path, *, force: bool = False, **parts: Any) -> Path:
        """Write the model as a pretrained folder (see the module docstring); ``parts``:
        what the task needs besides the weights (a tokenizer, labels, ...), by default
        what the model was loaded with. Returns the folder."""
        assert isinstance(self, nn.Module)
        adapter = self.pretrained_adapter()
        check_target(directory, force)  # before any work
        return save(self, directory, adapter.compose(self, **parts), adapter, force)

    @classmethod
    def from_pretrained(cls: type[M], directory: str | Path, *, which: str = "best") -> M:
        """The model of a pretrained folder (or of a run folder's ``which`` checkpoint,
        falling back to the other one when it is damaged), in eval mode, on the CPU, with
        ``pretrained`` set. Only a local folder: a missing one is an error."""
        adapter = cls.pretrained_adapter()
        model = ckpt.load_run(local_folder(directory), which, adapter.load)
        if not isinstance(model, cls):
            raise CheckpointError(
                f"{str(directory)!r} holds a {type(model).__name__}, not a {cls.__name__}"
            )
        return model.eval()  # type: ignore[attr-defined,no-any-return]
