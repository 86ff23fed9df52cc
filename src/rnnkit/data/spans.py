"""Where each token of a text lies in it: token ids -> character spans, in UTF-16 units.

A viewer that colours a text token by token, and matches JavaScript regular expressions
against it, needs each token's place in the text as JavaScript counts it: in UTF-16 code
units (a character above U+FFFF, such as most emoji, is two units). ``token_spans``
gives [start, end) per token in those units, for every tokenizer kind:

- char: one token per code point (an unseen character is ``<unk>``, still one token);
- word: the words of ``str.split`` on each line, and each line's ``<eos>`` on its
  newline character (``WordTokenizer``'s convention);
- bpe: the token's UTF-8 bytes laid end to end over the text's bytes. A character
  belongs to the token holding its first byte, so a token made only of a character's
  later bytes (byte-level BPE may split a multibyte character) has an empty span at
  the end of the previous token's.

The spans are checked against the ids (the same count, the same words, the same bytes),
so a tokenizer that changes its rules fails here instead of colouring the wrong text.
"""

from __future__ import annotations

from collections.abc import Sequence

from rnnkit.data.tokenizers import EOS_ID, BPETokenizer, CharTokenizer, Tokenizer, WordTokenizer

Span = tuple[int, int]
"""[start, end) in UTF-16 code units."""


def utf16_offsets(text: str) -> list[int]:
    """The UTF-16 offset of each code point of ``text``, and of its end: len(text) + 1
    numbers, the last the text's length in UTF-16 units (what JavaScript's ``length``
    says)."""
    offsets = [0] * (len(text) + 1)
    at = 0
    for i, ch in enumerate(text):
        offsets[i] = at
        at += 2 if ord(ch) > 0xFFFF else 1
    offsets[len(text)] = at
    return offsets


def token_spans(tokenizer: Tokenizer, text: str, ids: Sequence[int]) -> list[Span]:
    """[start, end) of each of ``ids`` (``tokenizer.encode(text)``) in UTF-16 units."""
    offsets = utf16_offsets(text)
    return [(offsets[a], offsets[b]) for a, b in token_points(tokenizer, text, ids)]


def token_points(tokenizer: Tokenizer, text: str, ids: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each of ``ids`` (``tokenizer.encode(text)``) in code points (as
    Python indexes ``text``), checked against the ids."""
    if isinstance(tokenizer, CharTokenizer):
        points = [(i, i + 1) for i in range(len(text))]
    elif isinstance(tokenizer, WordTokenizer):
        points = _word_points(text)
    elif isinstance(tokenizer, BPETokenizer):
        points = _bpe_points(tokenizer, text, ids)
    else:
        raise ValueError(f"no token spans for a {tokenizer.kind!r} tokenizer")
    if len(points) != len(ids):
        raise ValueError(
            f"the {tokenizer.kind} tokenizer gave {len(ids)} tokens but the text splits "
            f"into {len(points)}: the spans would not match the tokens"
        )
    if isinstance(tokenizer, WordTokenizer):
        for (start, end), id in zip(points, ids, strict=True):
            piece = text[start:end]
            expected = "\n" if id == EOS_ID else tokenizer.decode([id])
            if id != tokenizer.unk_id and piece != expected:
                raise ValueError(f"word token {expected!r} does not match the text {piece!r}")
    return points


def _word_points(text: str) -> list[tuple[int, int]]:
    """Code-point spans of ``WordTokenizer.encode``'s tokens: words split at
    ``str.isspace`` characters within each line, then the line's newline as ``<eos>``."""
    points: list[tuple[int, int]] = []
    start = -1
    for i, ch in enumerate(text):
        if ch.isspace():
            if start >= 0:
                points.append((start, i))
                start = -1
            if ch == "\n":
                points.append((i, i + 1))
        elif start < 0:
            start = i
    if start >= 0:
        points.append((start, len(text)))
    return points


def _bpe_points(tokenizer: BPETokenizer, text: str, ids: Sequence[int]) -> list[tuple[int, int]]:
    """Code-point spans of byte-level BPE tokens: each character goes to the token that
    holds its first byte."""
    data = text.encode("utf-8")
    # chars_before[b]: the characters that start before byte b (a UTF-8 continuation byte
    # is 0b10xxxxxx), i.e. the first character starting at or after byte b
    chars_before = [0] * (len(data) + 1)
    for b, byte in enumerate(data):
        chars_before[b + 1] = chars_before[b] + ((byte & 0xC0) != 0x80)
    points: list[tuple[int, int]] = []
    at = 0  # the token's first byte
    for id in ids:
        piece = tokenizer.token_bytes(id)
        if data[at : at + len(piece)] != piece:
            raise ValueError(
                f"bpe token {id} ({piece!r}) does not match the text's bytes at byte {at}"
            )
        points.append((chars_before[at], chars_before[at + len(piece)]))
        at += len(piece)
    if at != len(data):
        raise ValueError(f"the bpe tokens cover {at} of the text's {len(data)} bytes")
    return points
