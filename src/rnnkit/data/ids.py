"""Token ids of a text file in the smallest integer type, in memory or memory-mapped.

A corpus's ids take 1 byte each for a vocabulary of at most 256 ids (characters), 2 for
at most 65,536 (words, BPE) and 4 beyond (``id_dtype``), not int64's 8. ``encode_ids``
keeps them in memory. ``cached_ids`` writes them chunk by chunk to a file and maps it
read-only, so a corpus larger than memory costs page cache, which the kernel evicts as
it needs, not resident memory that it cannot.

A cache is a raw array ``NAME.ids`` (no header) beside ``NAME.ids.json``, which records
what it was built from (the source's resolved path, size and mtime_ns, the encoding, a
SHA-256 of the tokenizer's JSON) and what it holds (dtype, count). It is reused only when
every entry matches and the file has count * itemsize bytes; otherwise it is rebuilt.

    ids = rnnkit.data.cached_ids(tok, "input.txt", "run/cache/train.ids")  # uint8 [N]
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from rnnkit.common.checks import positive_int
from rnnkit.common.io import UnsafePathError, atomic_path, atomic_write_text
from rnnkit.data.text import DataError, iter_text

if TYPE_CHECKING:
    from rnnkit.data.tokenizers import Tokenizer

CACHE_FORMAT = 1
CHUNK_CHARS = 1 << 20


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest NumPy integer type that holds ids 0 .. vocab_size - 1: uint8 up to
    256 ids, uint16 up to 65,536, else int32 (signed: torch indexes with signed types)."""
    positive_int("vocab_size", vocab_size)
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 31:
        return np.dtype(np.int32)
    raise ValueError(f"vocab_size must be at most 2**31, got {vocab_size}")


def _encoded_chunks(
    tokenizer: Tokenizer, path: str | os.PathLike[str], encoding: str, chunk_chars: int
) -> Iterator[np.ndarray]:
    dtype = id_dtype(tokenizer.vocab_size)
    for chunk in iter_text(path, encoding, chunk_chars):
        # encode_array gives int64; narrow each chunk so no int64 copy of the corpus exists
        yield tokenizer.encode_array(chunk).astype(dtype)


def _no_tokens(path: str | os.PathLike[str]) -> DataError:
    return DataError(f"{Path(path)}: the file holds no tokens (only whitespace?)")


def encode_ids(
    tokenizer: Tokenizer,
    path: str | os.PathLike[str],
    encoding: str = "utf-8",
    *,
    chunk_chars: int = CHUNK_CHARS,
) -> np.ndarray:
    """Token ids of a whole file, in memory, as a NumPy array [N] of
    ``id_dtype(tokenizer.vocab_size)``; built chunk by chunk (``iter_text``), so it
    equals ``tokenizer.encode(read_text(path))``. Raises ``DataError`` for a file with
    no tokens, and as ``iter_text`` does."""
    parts = list(_encoded_chunks(tokenizer, path, encoding, chunk_chars))
    if not parts or sum(p.size for p in parts) == 0:
        raise _no_tokens(path)
    return np.concatenate(parts)


def encode_file(
    tokenizer: Tokenizer,
    path: str | os.PathLike[str],
    encoding: str = "utf-8",
    *,
    chunk_chars: int = CHUNK_CHARS,
) -> torch.Tensor:
    """``encode_ids`` widened to an int64 tensor [N]."""
    ids = encode_ids(tokenizer, path, encoding, chunk_chars=chunk_chars)
    return torch.from_numpy(ids.astype(np.int64))


def tokenizer_digest(tokenizer: Tokenizer) -> str:
    """SHA-256 of the tokenizer's JSON (keys sorted): equal digests encode alike."""
    text = json.dumps(tokenizer.to_dict(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _provenance(tokenizer: Tokenizer, path: Path, encoding: str) -> dict[str, Any]:
    stat = path.stat()
    return {
        "format": CACHE_FORMAT,
        "source": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "encoding": encoding,
        "tokenizer_sha256": tokenizer_digest(tokenizer),
        "dtype": id_dtype(tokenizer.vocab_size).name,
    }


def _reusable(cache_file: Path, record_file: Path, wanted: dict[str, Any]) -> int | None:
    """The cached token count if the cache matches ``wanted`` and is whole, else None."""
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
        size = cache_file.stat().st_size
    except (OSError, ValueError):
        return None  # missing or torn: rebuild
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in wanted.items()):
        return None
    count = record.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return None
    return count if size == count * np.dtype(wanted["dtype"]).itemsize else None


def cached_ids(
    tokenizer: Tokenizer,
    path: str | os.PathLike[str],
    cache_file: str | os.PathLike[str],
    encoding: str = "utf-8",
    *,
    chunk_chars: int = CHUNK_CHARS,
) -> np.memmap:
    """``encode_ids(tokenizer, path, encoding)``, memory-mapped read-only from
    ``cache_file``: reused when its record ``cache_file + ".json"`` matches ``path``'s
    size and mtime, the encoding and the tokenizer, else encoded there first, one chunk
    in memory at a time.

    Both files are written atomically (``rnnkit.common.io.atomic_path``), the ids before
    their record, so a crash leaves a cache that is rebuilt, never one that is trusted.
    Raises ``UnsafePathError`` if either is a symbolic link (nothing is written), and
    as ``encode_ids`` does.
    """
    source = Path(path)
    cache_file = Path(cache_file)
    record_file = cache_file.with_name(cache_file.name + ".json")
    for target in (cache_file, record_file):
        if target.is_symlink():
            raise UnsafePathError(f"refusing to use the symbolic link {str(target)!r} as a cache")
    iter_text(source, encoding, chunk_chars)  # the file's and the encoding's errors first
    wanted = _provenance(tokenizer, source, encoding)
    count = _reusable(cache_file, record_file, wanted)
    if count is None:
        count = 0
        with atomic_path(cache_file) as tmp, open(tmp, "wb") as f:
            for ids in _encoded_chunks(tokenizer, source, encoding, chunk_chars):
                ids.tofile(f)
                count += ids.size
            if count == 0:
                raise _no_tokens(source)
        # The stat taken before encoding: a source edited meanwhile fails the next check.
        atomic_write_text(record_file, json.dumps(wanted | {"count": count}, indent=1) + "\n")
    return np.memmap(cache_file, dtype=wanted["dtype"], mode="r", shape=(count,))
