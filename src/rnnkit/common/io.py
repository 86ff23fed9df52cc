"""Atomic writes: a reader sees the old file or the new one, never a half-written one.

Every file rnnkit writes goes through here. A file is written beside its target under a
hidden unique name, flushed to disk, and renamed over the target (``os.replace`` is atomic
within a file system); the directory is synced so the rename survives a power cut. The
one exception is an append-only log (``open_log``), which grows a line at a time. A
target that is a symbolic link is refused: a run folder from elsewhere must not redirect a
write to a file outside it.

atomic_write_text("metrics.json", json.dumps(data))
with atomic_path("song.mid") as tmp:        # for writers that want a path (mido, safetensors)
    midi.save(tmp)
atomic_savefig(fig, "loss.png", dpi=100)    # a matplotlib figure
with atomic_dir("run/last") as tmp:         # a directory of files replaced as one (checkpoints)
    save_file(tensors, tmp / "model.safetensors")

A directory cannot be renamed over a non-empty one, so ``atomic_dir`` swaps in two renames:
the old directory goes aside to ``<name>.previous`` and is deleted only once the new one is
in place. A crash between the two renames leaves only ``<name>.previous``; a reader looks
there when ``<name>`` is missing (``previous_of``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO


class UnsafePathError(OSError):
    """A write that would follow a symbolic link."""


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's or a directory's data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def previous_of(target: str | os.PathLike[str]) -> Path:
    """Where ``atomic_dir`` keeps the old directory while it swaps in the new one."""
    target = Path(target)
    return target.with_name(target.name + ".previous")


def _temporary_beside(target: Path) -> Path:
    return target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")


def _check_target(target: Path) -> None:
    if target.is_symlink():
        raise UnsafePathError(f"refusing to write through the symbolic link {str(target)!r}")


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block ends without an error, the
    file written there replaces ``target`` atomically (else it is removed)."""
    target = Path(target)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(target)
    try:
        yield tmp
        fsync_path(tmp)
        _check_target(target)
        os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``target``; when the block ends without an
    error, its files and the directory are synced and it replaces ``target`` (the old one
    going aside to ``previous_of(target)`` for the moment of the swap); on an error it is
    removed and ``target`` is left as it was."""
    target = Path(target)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(target)
    previous = previous_of(target)
    tmp.mkdir()
    try:
        yield tmp
        for path in tmp.rglob("*"):  # files and subdirectories written in the block
            if not path.is_symlink():
                fsync_path(path)
        fsync_path(tmp)
        _check_target(target)
        if target.exists():
            if previous.exists():
                shutil.rmtree(previous)  # stale: target is complete
            os.replace(target, previous)
        # else a previous swap died between its renames: <name>.previous is the only
        # complete copy, kept until the new one is in place
        os.replace(tmp, target)
        fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def check_new_file(target: str | os.PathLike[str], flag: str, force: bool = False) -> Path:
    """A user-named output file, checked before any work: a folder or a link is refused,
    and so is an existing file unless ``force`` (the command's ``--force``)."""
    target = Path(target)
    if target.is_symlink():
        raise UnsafePathError(f"{flag} {str(target)!r} is a symbolic link; name a file")
    if target.is_dir():
        raise UnsafePathError(f"{flag} {str(target)!r} is a folder; name a file")
    if target.exists() and not force:
        raise FileExistsError(f"{flag} {str(target)!r} exists; pass --force to replace it")
    return target


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(target, text.encode(encoding))


def open_log(target: str | os.PathLike[str]) -> TextIO:
    """A UTF-8 text log opened for appending. Not atomic: it grows a line at a time and
    its readers skip a torn last line. A symbolic link is refused, as for every write."""
    target = Path(target)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.open("a", encoding="utf-8")


def atomic_savefig(figure: Any, target: str | os.PathLike[str], **kwargs: Any) -> Path:
    """``figure.savefig`` (matplotlib) atomically, in the format ``target``'s suffix names
    (the temporary's own suffix would not)."""
    target = Path(target)
    kwargs.setdefault("format", target.suffix.lstrip(".") or "png")
    with atomic_path(target) as tmp:
        figure.savefig(tmp, **kwargs)
    return target
