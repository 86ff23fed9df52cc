"""Atomic writes: a reader sees the old file or the new one, never a half-written one.

Every file rnnkit writes goes through here. A file is written beside its target under a
hidden unique name, flushed to disk, and renamed over the target (``os.replace`` is atomic
within a file system); the directory is synced so the rename survives a power cut. A
target that is a symbolic link is refused: a run folder from elsewhere must not redirect a
write to a file outside it.

atomic_write_text("metrics.json", json.dumps(data))
with atomic_path("song.mid") as tmp:        # for writers that want a path (mido, savefig)
    midi.save(tmp)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


class UnsafePathError(OSError):
    """A write that would follow a symbolic link."""


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's or a directory's data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        fsync_path(tmp)
        _check_target(target)
        os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(target, text.encode(encoding))
