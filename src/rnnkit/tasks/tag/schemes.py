"""Tag schemes for chunked (span) labels: IOB1, IOB2 and BIOES, with conversion and the
span extraction of the CoNLL ``conlleval`` script.

    IOB1  (CoNLL-2003's files): I-X inside a chunk; B-X only where a chunk of type X
          directly follows another chunk of type X.
    IOB2  every chunk starts with B-X.
    BIOES B-X begin, I-X inside, E-X end, S-X a one-token chunk.

A span is (type, start, end) with ``end`` exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence

SCHEMES = ("IOB1", "IOB2", "BIOES")
_PREFIXES = {"IOB1": "BI", "IOB2": "BI", "BIOES": "BIES"}

Span = tuple[str, int, int]


class TagError(ValueError):
    """A tag that is malformed or outside its scheme."""


def split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or len(prefix) != 1 or not kind:
        raise TagError(f"malformed tag {tag!r}: expected 'O' or PREFIX-TYPE such as 'B-PER'")
    return prefix, kind


def check_scheme(name: str) -> str:
    if name not in SCHEMES:
        raise ValueError(f"tag scheme must be one of {SCHEMES}, got {name!r}")
    return name


def validate(tags: Sequence[str], scheme: str) -> None:
    """Raise TagError naming the first tag whose prefix the scheme does not have."""
    allowed = _PREFIXES[check_scheme(scheme)]
    for position, tag in enumerate(tags):
        prefix, _ = split_tag(tag)
        if prefix != "O" and prefix not in allowed:
            raise TagError(f"tag {tag!r} at position {position} is not valid in {scheme}")


def _end_of_chunk(prev: str, prev_type: str, tag: str, kind: str) -> bool:
    # conlleval's endOfChunk
    return prev in "ES" or (prev in "BI" and tag in "BSO") or (prev != "O" and prev_type != kind)


def _start_of_chunk(prev: str, prev_type: str, tag: str, kind: str) -> bool:
    # conlleval's startOfChunk
    return tag in "BS" or (prev in "ESO" and tag in "EI") or (tag != "O" and prev_type != kind)


def spans(tags: Sequence[str]) -> list[Span]:
    """Chunks exactly as conlleval reads them, whatever the scheme (IOB1, IOB2, BIOES)."""
    found: list[Span] = []
    prev, prev_type, start = "O", "", -1
    for i, tag in enumerate([*tags, "O"]):
        prefix, kind = split_tag(tag)
        if start >= 0 and _end_of_chunk(prev, prev_type, prefix, kind):
            found.append((prev_type, start, i))
            start = -1
        if _start_of_chunk(prev, prev_type, prefix, kind):
            start = i
        prev, prev_type = prefix, kind
    return found


def from_spans(chunks: Sequence[Span], length: int, scheme: str) -> list[str]:
    """Write spans as tags of ``scheme`` (the inverse of ``spans`` for valid input)."""
    check_scheme(scheme)
    tags = ["O"] * length
    previous_end, previous_type = -1, ""
    for kind, start, end in sorted(chunks, key=lambda c: c[1]):
        if scheme == "BIOES":
            if end - start == 1:
                tags[start] = f"S-{kind}"
            else:
                tags[start], tags[end - 1] = f"B-{kind}", f"E-{kind}"
                tags[start + 1 : end - 1] = [f"I-{kind}"] * (end - start - 2)
            continue
        tags[start:end] = [f"I-{kind}"] * (end - start)
        if scheme == "IOB2" or (previous_end == start and previous_type == kind):
            tags[start] = f"B-{kind}"
        previous_end, previous_type = end, kind
    return tags


def convert(tags: Sequence[str], to: str) -> list[str]:
    """Re-tag a sequence in another scheme, keeping its chunks."""
    return from_spans(spans(tags), len(tags), to)


def allowed_transitions(
    tag_names: Sequence[str], scheme: str
) -> tuple[list[list[bool]], list[bool], list[bool]]:
    """Which tag may follow which in a valid sequence of ``scheme``.

    Returns (allowed[i][j]: tag j may follow tag i, may_start[j], may_end[i]); a CRF that
    decodes under these constraints never outputs an invalid sequence.
    """
    check_scheme(scheme)
    parsed = [split_tag(t) for t in tag_names]
    validate(tag_names, scheme)

    def follows(prev: tuple[str, str] | None, cur: tuple[str, str]) -> bool:
        (p, pk), (c, ck) = prev or ("O", ""), cur
        if scheme == "IOB2":
            return c != "I" or (p in "BI" and pk == ck)
        if scheme == "IOB1":
            return c != "B" or (p in "BI" and pk == ck)
        inside = p in "BI"  # BIOES: a chunk is open and must go on or end with its own type
        return (c in "IE" and pk == ck) if inside else c in "OBS"

    allowed = [[follows(p, c) for c in parsed] for p in parsed]
    may_start = [follows(None, c) for c in parsed]
    may_end = [scheme != "BIOES" or p[0] in "OES" for p in parsed]
    return allowed, may_start, may_end
