"""The CoNLL column format (sequence tagging, many-to-many aligned).

One token per line, columns separated by whitespace, a blank line between sentences and
``-DOCSTART-`` lines between documents (skipped). ``token_column`` and ``tag_column``
pick the columns (CoNLL-2003: ``token POS chunk NER`` -> 0 and -1). Tags are checked
against the file's scheme; errors name the file and the line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data.text import DataError, read_text
from rnnkit.tasks.tag.schemes import TagError, validate


@dataclass(frozen=True)
class Sentence:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


def read_conll(
    path: str | os.PathLike[str],
    *,
    token_column: int = 0,
    tag_column: int = -1,
    scheme: str = "IOB1",
    encoding: str = "utf-8",
) -> list[Sentence]:
    p = Path(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    width = None
    start_line = 1

    def finish() -> None:
        if tokens:
            try:
                validate(tags, scheme)
            except TagError as err:
                raise DataError(f"{p}: sentence starting at line {start_line}: {err}") from None
            sentences.append(Sentence(tuple(tokens), tuple(tags)))
        tokens.clear()
        tags.clear()

    for number, line in enumerate(read_text(p, encoding).splitlines(), 1):
        columns = line.split()
        if not columns or columns[0] == "-DOCSTART-":
            finish()
            continue
        if width is None:
            width = len(columns)
        if len(columns) != width:
            raise DataError(f"{p}:{number}: {len(columns)} columns, earlier lines have {width}")
        try:
            token, tag = columns[token_column], columns[tag_column]
        except IndexError:
            raise DataError(
                f"{p}:{number}: no column {token_column} or {tag_column} in {len(columns)} columns"
            ) from None
        if not tokens:
            start_line = number
        tokens.append(token)
        tags.append(tag)
    finish()
    if not sentences:
        raise DataError(f"{p}: no sentences found")
    return sentences


def format_conll(sentences: Sequence[Sentence], predicted: Sequence[Sequence[str]]) -> str:
    """``token gold predicted`` lines, a blank line after each sentence (conlleval input)."""
    out = []
    for sentence, tags in zip(sentences, predicted, strict=True):
        for token, gold, guess in zip(sentence.tokens, sentence.tags, tags, strict=True):
            out.append(f"{token} {gold} {guess}")
        out.append("")
    return "\n".join(out) + "\n"
