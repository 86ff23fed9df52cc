"""Reading text files of any size, with errors that name the file and the byte.

Files are read in binary and decoded incrementally, so a multibyte character split
across two reads is decoded whole and a bad byte is reported at its offset. Line ends
are normalised to ``"\\n"`` as Python's text mode does (``\\r\\n`` and ``\\r`` alike).
``iter_text`` cuts its chunks only where every tokenizer's result is unchanged by the
cut (see ``_cut``), so encoding chunk by chunk (``rnnkit.data.ids``) equals encoding the
whole file at once.
"""

from __future__ import annotations

import codecs
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path

from rnnkit.common.checks import positive_int

# Cuts that change no tokenizer's output: after a newline, or before a single space,
# with a non-whitespace character on each side. Char tokens never span characters, word
# tokens never span whitespace, and byte-level BPE's pre-tokenizer (GPT-2's regex) puts
# a token boundary at both places whatever follows, so each side pre-tokenizes alone as
# it does in the whole.
_LINE_BREAK = re.compile(r"(?<=\S\n)(?=\S)")
_SPACE_BREAK = re.compile(r"(?<=\S)(?= \S)")
_WHITESPACE = re.compile(r"\s")
# When no clean cut turns up, stop looking once the text carried over holds this many
# chunks' worth (and at least _MIN_CARRY characters), so memory stays bounded.
_MAX_CARRY_CHUNKS = 8
_MIN_CARRY = 1 << 16
_SNIFF_BYTES = 8000


class DataError(ValueError):
    """Bad input data (missing, empty, binary or undecodable file); names the file."""


class EncodingError(DataError):
    """A file that does not decode in the encoding given. The message ends by asking for
    the file's encoding; the command line adds the flag that gives it."""


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a text file")
    return p


def _open_checked(path: str | os.PathLike[str]) -> tuple[Path, io.BufferedReader]:
    p = _check_path(path)
    try:
        f = open(p, "rb")  # closed by the generator that reads it
    except OSError as err:
        raise DataError(f"{p}: cannot be read ({err.strerror})") from err
    return p, f


def _check_encoding(encoding: str) -> codecs.CodecInfo:
    try:
        return codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"unknown text encoding {encoding!r}") from None


def _binary_message(path: Path, offset: int) -> str:
    return f"{path}: NUL byte at byte offset {offset}; this looks like a binary file, not text"


def _decoded_blocks(path: str | os.PathLike[str], encoding: str, block: int) -> Iterator[str]:
    """The file's text in pieces of about ``block`` bytes, line ends normalised."""
    info = _check_encoding(encoding)
    # In an ASCII-compatible encoding a NUL byte is a NUL character: find it in the raw
    # bytes, before a binary file trips the decoder with a misleading message.
    nul_is_byte = "\0a".encode(info.name, errors="ignore") == b"\0a"
    p, f = _open_checked(path)
    with f:
        if nul_is_byte:  # look ahead as git does, so a binary file reads as binary
            head = f.peek(_SNIFF_BYTES)[:_SNIFF_BYTES]
            if b"\0" in head:
                raise DataError(_binary_message(p, head.index(b"\0")))
        decoder = info.incrementaldecoder(errors="strict")
        lines = io.IncrementalNewlineDecoder(decoder, translate=True)
        offset = 0  # bytes handed to the decoder so far
        chars = 0  # characters decoded so far
        newlines = 0
        while True:
            raw = f.read(block)
            final = not raw
            if nul_is_byte and b"\0" in raw:
                raise DataError(_binary_message(p, offset + raw.index(b"\0")))
            pending = decoder.getstate()[0]
            try:
                text = lines.decode(raw, final=final)
            except UnicodeDecodeError as err:
                at = offset - len(pending) + err.start
                bad = err.object[err.start : err.start + 4]
                before = err.object[: err.start].decode(info.name, errors="replace")
                line = newlines + before.count("\n") + 1
                raise EncodingError(
                    f"{p}: byte offset {at} (bytes {bad.hex(' ')}, line {line}) is not valid "
                    f"{encoding} ({err.reason}); if the file has another encoding, give it"
                ) from None
            if not nul_is_byte and "\0" in text:
                raise DataError(
                    f"{p}: NUL character at character {chars + text.index(chr(0))}; this "
                    "looks like a binary file, not text"
                )
            if offset == 0 and final:
                raise DataError(f"{p}: the file is empty")
            offset += len(raw)
            chars += len(text)
            newlines += text.count("\n")
            if text:
                yield text
            if final:
                return


def _cut(text: str, lenient: bool) -> int:
    """Where to end a chunk of ``text``: after its last clean line break, else before its
    last clean space (see ``_LINE_BREAK``); 0 if it has neither (keep reading). With
    ``lenient`` (none found for long), after the last whitespace, else at the end: still
    exact for char and word tokens, maybe not for BPE.
    """
    for pattern in (_LINE_BREAK, _SPACE_BREAK):
        ends = [m.end() for m in pattern.finditer(text)]
        if ends and ends[-1] > 0:
            return ends[-1]
    if not lenient:
        return 0
    ends = [m.end() for m in _WHITESPACE.finditer(text)]
    return ends[-1] if ends else len(text)


def iter_text(
    path: str | os.PathLike[str], encoding: str = "utf-8", chunk_chars: int = 1 << 20
) -> Iterator[str]:
    """Stream a text file as chunks of about ``chunk_chars`` characters.

    The chunks join to ``read_text(path)``; each ends where a cut changes no tokenizer's
    output (after a newline or before a space, between non-blank characters; see
    ``_cut``), so tokenizing chunk by chunk gives the same ids as the whole text.
    Raises ``DataError`` naming the file for a missing, empty, binary or undecodable
    file (with the byte offset of the first bad byte).
    """
    positive_int("chunk_chars", chunk_chars)
    _check_path(path)  # fail here, not at the first next()
    _check_encoding(encoding)
    return _chunks(path, encoding, chunk_chars)


def _chunks(path: str | os.PathLike[str], encoding: str, chunk_chars: int) -> Iterator[str]:
    carry = ""
    for text in _decoded_blocks(path, encoding, chunk_chars):
        carry += text
        while len(carry) >= chunk_chars:
            lenient = len(carry) >= max(_MAX_CARRY_CHUNKS * chunk_chars, _MIN_CARRY)
            end = _cut(carry, lenient)
            if end == 0:
                break
            yield carry[:end]
            carry = carry[end:]
    if carry:
        yield carry


def read_text(path: str | os.PathLike[str], encoding: str = "utf-8") -> str:
    """The whole file as one string (line ends normalised); errors as ``iter_text``."""
    return "".join(_decoded_blocks(path, encoding, 1 << 20))
