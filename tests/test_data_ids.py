"""Token ids in the smallest integer type: in memory, and cached in a memory-mapped file."""

import functools
import json
import os

import numpy as np
import pytest

from rnnkit.common.io import UnsafePathError
from rnnkit.data import (
    DataError,
    Tokenizer,
    cached_ids,
    encode_file,
    encode_ids,
    id_dtype,
    train_tokenizer,
)

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n  Grüße aus Köln — naïve café.\n日本語のテキスト。 🙂🚀\n"
) * 5


@functools.cache
def trained(kind: str) -> Tokenizer:
    return train_tokenizer(kind, [TEXT], vocab_size=300 if kind == "bpe" else None)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "vocab_size, dtype",
    [
        (1, np.uint8),
        (255, np.uint8),
        (256, np.uint8),
        (257, np.uint16),
        (65535, np.uint16),
        (65536, np.uint16),
        (65537, np.int32),
        (2**31, np.int32),
    ],
)
def test_id_dtype_is_the_smallest_that_holds_every_id(vocab_size, dtype):
    assert id_dtype(vocab_size) == dtype
    assert np.iinfo(dtype).max >= vocab_size - 1  # the largest id fits


def test_id_dtype_bad_sizes():
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=rf"vocab_size must be a positive integer, got {bad}"):
            id_dtype(bad)
    with pytest.raises(ValueError, match=r"vocab_size must be at most 2\*\*31, got 2147483649"):
        id_dtype(2**31 + 1)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_cached_ids_equal_the_in_memory_encoding(tmp_path, text_file, kind):
    tok = trained(kind)
    expected = tok.encode(TEXT)
    in_memory = encode_ids(tok, text_file, chunk_chars=16)
    cached = cached_ids(tok, text_file, tmp_path / "cache" / "train.ids", chunk_chars=16)
    assert isinstance(cached, np.memmap)
    assert not cached.flags.writeable
    assert in_memory.dtype == cached.dtype == id_dtype(tok.vocab_size)
    assert in_memory.tolist() == cached.tolist() == expected
    assert encode_file(tok, text_file).tolist() == expected  # the int64 tensor agrees
    record = json.loads((tmp_path / "cache" / "train.ids.json").read_text())
    assert record["count"] == len(expected)
    assert record["dtype"] == cached.dtype.name
    assert (tmp_path / "cache" / "train.ids").stat().st_size == len(expected) * cached.itemsize


def test_word_ids_beyond_256_are_uint16(tmp_path):
    text = " ".join(f"w{i}" for i in range(400)) + "\n"
    path = tmp_path / "words.txt"
    path.write_text(text)
    tok = train_tokenizer("word", [text])
    ids = cached_ids(tok, path, tmp_path / "w.ids")
    assert ids.dtype == np.uint16
    assert ids.tolist() == tok.encode(text)
    assert max(ids.tolist()) > 255


def _identity(path):
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns


def test_cache_is_reused_while_valid_and_rebuilt_when_anything_changes(tmp_path, text_file):
    tok = trained("char")
    cache = tmp_path / "cache" / "train.ids"
    cached_ids(tok, text_file, cache)
    built = _identity(cache)
    assert cached_ids(tok, text_file, cache).tolist() == tok.encode(TEXT)
    assert _identity(cache) == built  # reused, not rewritten

    # Same size, new mtime: rebuilt.
    st = text_file.stat()
    os.utime(text_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    cached_ids(tok, text_file, cache)
    assert _identity(cache) != built
    built = _identity(cache)

    # New content (and size): rebuilt with the new ids.
    text_file.write_text(TEXT + "more\n", encoding="utf-8")
    assert cached_ids(tok, text_file, cache).tolist() == tok.encode(TEXT + "more\n")
    assert _identity(cache) != built
    built = _identity(cache)

    # Another tokenizer or encoding: rebuilt.
    other = train_tokenizer("char", [TEXT + "more\nXYZ"])
    assert cached_ids(other, text_file, cache).tolist() == other.encode(TEXT + "more\n")
    assert _identity(cache) != built
    built = _identity(cache)
    cached_ids(other, text_file, cache, encoding="utf8")
    assert _identity(cache) != built


def test_a_torn_or_damaged_cache_is_rebuilt(tmp_path, text_file):
    tok = trained("char")
    cache = tmp_path / "train.ids"
    record = tmp_path / "train.ids.json"
    expected = tok.encode(TEXT)
    cached_ids(tok, text_file, cache)
    with open(cache, "r+b") as f:  # a truncated ids file
        f.truncate(10)
    assert cached_ids(tok, text_file, cache).tolist() == expected
    record.write_text("{not json")
    assert cached_ids(tok, text_file, cache).tolist() == expected
    record.unlink()  # a crash between the ids and their record
    assert cached_ids(tok, text_file, cache).tolist() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "corpus.txt",
        "train.ids",
        "train.ids.json",
    ]


@pytest.mark.parametrize("link", ["train.ids", "train.ids.json"])
def test_the_cache_is_never_written_through_a_symbolic_link(tmp_path, text_file, link):
    tok = trained("char")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"keep me")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / link).symlink_to(outside)
    with pytest.raises(UnsafePathError, match=r"refusing to use the symbolic link .*" + link):
        cached_ids(tok, text_file, tmp_path / "cache" / "train.ids")
    assert outside.read_bytes() == b"keep me"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [link]


def test_errors_name_the_file(tmp_path):
    tok = trained("word")
    blank = tmp_path / "blank.txt"
    blank.write_text("   \t  ")  # no words and no line end
    with pytest.raises(DataError, match=r"blank.txt: the file holds no tokens"):
        encode_ids(tok, blank)
    with pytest.raises(DataError, match=r"blank.txt: the file holds no tokens"):
        cached_ids(tok, blank, tmp_path / "b.ids")
    assert not (tmp_path / "b.ids").exists()
    assert not (tmp_path / "b.ids.json").exists()
    with pytest.raises(DataError, match=r"missing.txt: no such file"):
        cached_ids(tok, tmp_path / "missing.txt", tmp_path / "m.ids")
