"""Run folders: claimed atomically, locked while a process trains in them.

A run folder holds one run's checkpoints (``last/``, ``best/``), its ``metrics.jsonl``
and its plots. Two processes must never write into one folder, so a folder is

- **claimed** without a check-then-create race: ``claim(out)`` creates ``out`` with
  ``mkdir`` (atomic: of two processes exactly one succeeds), or ``out-2``, ``out-3``,
  ... when ``out`` is taken; an existing folder is taken over only when it is empty, or
  holds nothing but the leftovers of a run killed before its first checkpoint;
- **locked** for as long as a process trains, resumes or evaluates into it:
  ``lock(folder)`` holds an exclusive ``flock`` on ``<folder>/run.lock``. The kernel drops
  the lock when the process ends, however it ends (kill -9 included), so a lock is never
  stale; a second process asking for it gets ``RunInUseError`` naming the holder.

Locks are re-entrant within a process (``claim`` then the trainer's own ``lock``), and
the lock file stays in the folder after the run: deleting it would let two processes
lock two different files of one name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "run.lock"
# What a run leaves before its first checkpoint: taken over by the next claim.
_LEFTOVERS = {"metrics.jsonl", "loss.png", "cache", LOCK_FILE}  # cache/: the token ids
# A folder holding any of these is a run, resumable or finished: never taken over.
_CHECKPOINTS = {"last", "best", "last.previous", "best.previous"}


class RunFolderError(ValueError):
    """A run folder that cannot be used: a file in its place, a link, no permission."""


class RunInUseError(RunFolderError):
    """Another process holds the run folder's lock."""


# folder (resolved) -> [open lock file descriptor, re-entry count]
_held: dict[Path, list[int]] = {}


def _is_temporary(name: str) -> bool:
    """``rnnkit.common.io``'s temporaries: ``.<target>.tmp-<hex>``."""
    return name.startswith(".") and ".tmp-" in name


def _holder(fd: int) -> str:
    """What the lock file says about the process holding it (best effort)."""
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return f" ({text})" if text else ""


def _open_lock_file(folder: Path) -> int:
    try:
        return os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RunFolderError(
                f"{str(folder / LOCK_FILE)!r} is a symbolic link; refusing to use the run folder"
            ) from None
        raise RunFolderError(
            f"cannot lock the run folder {str(folder)!r}: {error.strerror}"
        ) from None


def _try_lock(folder: Path) -> int | None:
    """An fd holding the folder's lock, or None when another process holds it."""
    fd = _open_lock_file(folder)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv[:3])}".encode(), 0)
    return fd


def _check_folder(folder: Path) -> None:
    if folder.is_symlink():
        raise RunFolderError(
            f"the run folder {str(folder)!r} is a symbolic link; name a real folder"
        )
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"the run folder {str(folder)!r} is a file; name a folder")


@contextlib.contextmanager
def lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold ``folder``'s lock for the block (re-entrant within a process); raise
    ``RunInUseError`` when another process holds it."""
    folder = Path(folder)
    _check_folder(folder)
    if not folder.is_dir():
        raise RunFolderError(f"the run folder {str(folder)!r} does not exist")
    key = folder.resolve()
    if key in _held:
        _held[key][1] += 1
    else:
        fd = _try_lock(folder)
        if fd is None:
            busy = _open_lock_file(folder)
            try:
                holder = _holder(busy)
            finally:
                os.close(busy)
            raise RunInUseError(
                f"the run folder {str(folder)!r} is in use by another process{holder}; "
                "wait for it to finish, or train into another folder"
            )
        _held[key] = [fd, 1]
    try:
        if _held[key][1] == 1:
            _refuse_links(folder)
        yield folder
    finally:
        entry = _held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[key]
            os.close(entry[0])  # closing the descriptor releases the flock


def _refuse_links(folder: Path) -> None:
    """A run folder from elsewhere may hold links: rnnkit's own entries must not be any,
    or a write meant for the run would land outside it."""
    for name in sorted(_LEFTOVERS | _CHECKPOINTS):
        if (folder / name).is_symlink():
            raise RunFolderError(
                f"{str(folder / name)!r} is a symbolic link; a run folder's own files must be "
                "real files and folders"
            )


def holds(folder: str | os.PathLike[str]) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return Path(folder).resolve() in _held


def _takeable(folder: Path, had_lock_file: bool) -> bool:
    """Whether a locked, existing ``folder`` may hold a new run: empty, or only the
    leftovers of an rnnkit run that died before its first checkpoint."""
    names = set(os.listdir(folder)) - {LOCK_FILE}
    if not names:
        return True
    if not had_lock_file:  # someone else's files, or a run from before run.lock existed
        return False
    return not names & _CHECKPOINTS and all(n in _LEFTOVERS or _is_temporary(n) for n in names)


def remove_temporaries(folder: str | os.PathLike[str]) -> list[str]:
    """Delete the temporary files and folders a killed writer left in ``folder``; call only
    while holding its lock. -> the names removed."""
    removed = []
    for entry in os.scandir(folder):
        if _is_temporary(entry.name):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
    return sorted(removed)


def _candidates(out: Path) -> Iterator[Path]:
    yield out
    n = 2
    while True:
        yield out.with_name(f"{out.name}-{n}")
        n += 1


@contextlib.contextmanager
def claim(out: str | os.PathLike[str]) -> Iterator[Path]:
    """A new run folder, locked for the block: ``out`` if it is free, else the first free
    ``out-2``, ``out-3``, ... A folder already holding a run (or files that are not
    rnnkit's) is never written into."""
    out = Path(out)
    if not out.name or out.name == "..":  # "." or "..": name the folder itself
        out = Path(os.path.abspath(out))
    _check_folder(out)
    made = [p for p in out.parents if not p.exists()]  # deepest first: removed if unused
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(
            f"cannot create the run folder's parent {str(out.parent)!r}: {error.strerror}"
        ) from None
    for folder in _candidates(out):
        try:
            folder.mkdir()
            created = True
        except FileExistsError:
            created = False
        except OSError as error:
            raise RunFolderError(
                f"cannot create the run folder {str(folder)!r}: {error.strerror}"
            ) from None
        if not created and (folder.is_symlink() or not folder.is_dir()):
            continue  # a file or a link of that name: not ours to use
        if folder.resolve() in _held:
            continue  # this process is training there already
        had_lock_file = (folder / LOCK_FILE).exists()
        if not created and not _takeable(folder, had_lock_file):
            continue  # checked before locking, so another's folder gets no run.lock
        fd = _try_lock(folder)
        if fd is None:
            continue
        if not created and not _takeable(folder, had_lock_file):  # changed meanwhile
            os.close(fd)
            continue
        _remove(folder, set(os.listdir(folder)) & (_LEFTOVERS - {LOCK_FILE}))
        remove_temporaries(folder)
        _held[folder.resolve()] = [fd, 0]
        removed = False
        try:
            with lock(folder):  # takes over the entry just made: released with the block
                try:
                    yield folder
                finally:  # still locked: no other process can be taking the folder over
                    removed = _clean_unused(folder, created)
        finally:
            if removed:
                for parent in made:
                    with contextlib.suppress(OSError):
                        parent.rmdir()  # only if still empty
        return


def _clean_unused(folder: Path, created: bool) -> bool:
    """After a claim's block: a folder that never got a checkpoint or an output (bad data,
    an error before the first step) is removed if the claim made it, else emptied of
    rnnkit's leftovers, so a failed start leaves nothing behind. -> whether it was removed."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return False
    if names & _CHECKPOINTS or not all(n in _LEFTOVERS or _is_temporary(n) for n in names):
        return False
    if created:
        shutil.rmtree(folder, ignore_errors=True)
        return True
    _remove(folder, names - {LOCK_FILE})
    return False


def _remove(folder: Path, names: set[str]) -> None:
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
