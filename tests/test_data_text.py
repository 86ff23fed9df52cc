"""Reading text files: streaming, chunk-boundary safety, and errors that name the file."""

import functools
import itertools
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data import (
    DataError,
    EncodingError,
    Tokenizer,
    encode_file,
    iter_text,
    read_text,
    train_tokenizer,
)

# Multibyte characters (2, 3 and 4 UTF-8 bytes), runs of spaces and blank lines, CRLF,
# indented lines and a missing final newline: every way a chunk cut could go wrong.
TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\r\n"
    "  Grüße   aus  Köln — naïve café.\n"
    "日本語のテキストです。\n\t🙂🚀 emoji  line \n"
    "don't   stop;  we'll see\n\n\n"
    "   leading spaces\nword\nword word word\nend without newline"
)
EXPECTED = TEXT.replace("\r\n", "\n")
CHUNK_SIZES = [1, 2, 3, 5, 8, 13, 64, 1 << 20]


@functools.cache
def trained(kind: str) -> Tokenizer:
    return train_tokenizer(kind, [EXPECTED], vocab_size=320 if kind == "bpe" else None)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(TEXT.encode("utf-8"))
    return path


def test_read_text_matches_python_text_mode(text_file):
    assert read_text(text_file) == text_file.read_text(encoding="utf-8") == EXPECTED


@pytest.mark.parametrize("chunk_chars", CHUNK_SIZES)
def test_iter_text_chunks_join_to_the_whole(text_file, chunk_chars):
    chunks = list(iter_text(text_file, chunk_chars=chunk_chars))
    assert "".join(chunks) == EXPECTED
    assert all(chunks)
    if chunk_chars < 64:
        assert len(chunks) > 1  # it really streamed


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
@pytest.mark.parametrize("chunk_chars", CHUNK_SIZES)
def test_encode_file_equals_encoding_the_whole_text(text_file, kind, chunk_chars):
    tok = trained(kind)
    ids = encode_file(tok, text_file, chunk_chars=chunk_chars)
    assert ids.dtype == torch.int64
    assert ids.dim() == 1
    assert ids.tolist() == tok.encode(EXPECTED)


@settings(max_examples=120, deadline=None)
@given(
    text=st.text(alphabet="ab \n\r\t'.,-7é日🙂", min_size=1, max_size=60),
    chunk_chars=st.integers(1, 12),
)
def test_chunked_encoding_equals_whole_encoding_for_any_text(text, chunk_chars):
    expected = text.replace("\r\n", "\n").replace("\r", "\n")  # universal newlines
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "text.txt"
        path.write_bytes(text.encode("utf-8"))
        assert "".join(iter_text(path, chunk_chars=chunk_chars)) == expected
        for kind in ("char", "word", "bpe"):
            tok = fuzz_trained(kind)
            try:
                ids = encode_file(tok, path, chunk_chars=chunk_chars).tolist()
            except DataError as err:
                assert "holds no tokens" in str(err)
                ids = []
            assert ids == tok.encode(expected), kind


@functools.cache
def fuzz_trained(kind: str) -> Tokenizer:
    sample = "ab ba\n\taab, bb. 7 77 -é日🙂 '\n\nab  ba b'a\n" * 3
    return train_tokenizer(kind, [sample], vocab_size=300 if kind == "bpe" else None)


def test_chunks_end_at_clean_cuts(text_file):
    # After "\n" or before " ", with non-blank characters on each side: no tokenizer's
    # output changes there.
    chunks = list(iter_text(text_file, chunk_chars=16))
    for chunk, following in itertools.pairwise(chunks):
        line_break = chunk[-2:-1].strip() and chunk[-1] == "\n" and following[0].strip()
        space = chunk[-1].strip() and following[0] == " " and following[1].strip()
        assert line_break or space, (chunk, following)


def test_text_without_clean_cuts_still_streams(tmp_path, monkeypatch):
    # No clean cut in sight for long: cut after whitespace, still exact for char and word.
    import rnnkit.data.text as text_module

    monkeypatch.setattr(text_module, "_MIN_CARRY", 0)
    path = tmp_path / "dense.txt"
    text = "日本語のテキスト  です\n\n\n。" * 20
    path.write_text(text)
    chunks = list(iter_text(path, chunk_chars=4))
    assert "".join(chunks) == text
    assert max(map(len, chunks)) <= 8 * 4 + 4
    for kind in ("char", "word"):
        tok = train_tokenizer(kind, [text])
        assert encode_file(tok, path, chunk_chars=4).tolist() == tok.encode(text)


def test_crlf_split_across_reads_is_one_newline(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"ab\r\ncd\r\n\r\nef\r")
    for chunk_chars in (1, 2, 3, 4):
        assert "".join(iter_text(path, chunk_chars=chunk_chars)) == "ab\ncd\n\nef\n"


def test_other_encodings(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café olé\n".encode("latin-1"))
    assert read_text(latin, encoding="latin-1") == "café olé\n"
    utf16 = tmp_path / "utf16.txt"  # NUL bytes here are text, not a binary file
    utf16.write_bytes("hé 日本\n".encode("utf-16"))
    assert "".join(iter_text(utf16, encoding="utf-16", chunk_chars=3)) == "hé 日本\n"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(DataError, match=f"{path}: no such file"):
        read_text(path)
    with pytest.raises(DataError, match="no such file"):
        iter_text(path)  # at the call, not at the first next()
    with pytest.raises(DataError, match="no such file"):
        encode_file(trained("char"), path)


def test_directory(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: is a directory, expected a text file"):
        read_text(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=f"{path}: the file is empty"):
        read_text(path)
    with pytest.raises(DataError, match="the file is empty"):
        list(iter_text(path))


def test_file_without_tokens(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("   \t  ")
    with pytest.raises(DataError, match=f"{path}: the file holds no tokens"):
        encode_file(trained("word"), path)


def test_binary_file(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(
        DataError, match=f"{path}: NUL byte at byte offset 8; this looks like a binary"
    ):
        read_text(path)
    with pytest.raises(DataError, match="NUL byte at byte offset 8"):
        list(iter_text(path, chunk_chars=3))
    late = tmp_path / "late.bin"  # past the first look-ahead, found while streaming
    late.write_bytes(b"text " * 4000 + b"\x00")
    with pytest.raises(DataError, match=f"{late}: NUL byte at byte offset 20000"):
        list(iter_text(late, chunk_chars=1000))


@pytest.mark.parametrize("chunk_chars", [1, 2, 4, 1 << 20])
def test_undecodable_bytes_give_the_byte_offset(tmp_path, chunk_chars):
    path = tmp_path / "latin1.txt"
    good = "naïve\nrésumé ".encode()
    path.write_bytes(good + "café".encode("latin-1") + b"\n")
    offset = len(good) + 3  # the latin-1 é
    with pytest.raises(DataError) as err:
        list(iter_text(path, chunk_chars=chunk_chars))
    message = str(err.value)
    assert message.startswith(f"{path}: byte offset {offset} (bytes e9 0a, line 2)")
    assert "line 2)" in message
    assert "is not valid utf-8" in message
    assert message.endswith("if the file has another encoding, give it")
    assert isinstance(err.value, EncodingError)  # the CLI adds its command's flag


def test_truncated_multibyte_character_at_end(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes("ok 日".encode()[:-1])
    with pytest.raises(
        DataError, match=r"byte offset 3 \(bytes e6 97, line 1\) is not valid utf-8"
    ):
        read_text(path)


def test_bad_arguments(text_file):
    with pytest.raises(DataError, match="unknown text encoding 'utf-99'"):
        read_text(text_file, encoding="utf-99")
    with pytest.raises(ValueError, match="chunk_chars must be a positive integer, got 0"):
        iter_text(text_file, chunk_chars=0)


def test_shared_corpora(shared_data):
    # The documented sizes: Tiny Shakespeare 1,115,394 characters over 65 distinct ones;
    # Penn Treebank validation 70,390 words on 3,370 lines, each line ending in <eos>.
    path = shared_data / "tinyshakespeare" / "input.txt"
    chars = train_tokenizer("char", iter_text(path))
    assert chars.vocab_size == 65 + 4
    assert encode_file(chars, path).shape == (1_115_394,)
    path = shared_data / "ptb" / "ptb.valid.txt"
    words = train_tokenizer("word", iter_text(path))
    ids = encode_file(words, path)
    assert ids.shape == (70_390 + 3_370,)
    assert int((ids == words.eos_id).sum()) == 3_370
    assert words.decode(ids) == "\n".join(
        " ".join(line.split()) for line in read_text(path).split("\n")
    )
