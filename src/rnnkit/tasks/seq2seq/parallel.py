"""Readers for parallel text (sequence to sequence): one TSV file or two aligned files.

    read_tsv("train.tsv")                  source<TAB>target, one pair per line
    read_aligned("train.de", "train.en")   line n of one file translates line n of the other

Blank lines are skipped (in aligned files, only where both sides are blank). Errors name
the file and the line: a TSV line without exactly one tab, an empty side, aligned files of
different lengths, a line blank on one side only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data.text import DataError, read_text


@dataclass(frozen=True)
class Pair:
    source: str
    target: str


def read_tsv(path: str | os.PathLike[str], encoding: str = "utf-8") -> list[Pair]:
    """Every ``source<TAB>target`` pair of a file; raises DataError naming file and line."""
    p = Path(path)
    pairs = []
    for number, line in enumerate(read_text(p, encoding).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            found = "no tab" if len(fields) == 1 else f"{len(fields) - 1} tabs"
            raise DataError(f"{p}:{number}: expected 'source<TAB>target', found {found}")
        source, target = (f.strip() for f in fields)
        if not source or not target:
            side = "source" if not source else "target"
            raise DataError(f"{p}:{number}: the {side} is empty")
        pairs.append(Pair(source, target))
    if not pairs:
        raise DataError(f"{p}: no pairs found")
    return pairs


def read_aligned(
    source_path: str | os.PathLike[str],
    target_path: str | os.PathLike[str],
    encoding: str = "utf-8",
) -> list[Pair]:
    """Pairs from two files whose line n are translations of each other."""
    sp, tp = Path(source_path), Path(target_path)
    sources = read_text(sp, encoding).splitlines()
    targets = read_text(tp, encoding).splitlines()
    if len(sources) != len(targets):
        raise DataError(
            f"{sp} has {len(sources):,} lines but {tp} has {len(targets):,}; "
            "aligned files need one line per pair"
        )
    pairs = []
    for number, (source, target) in enumerate(zip(sources, targets, strict=True), start=1):
        source, target = source.strip(), target.strip()
        if not source and not target:
            continue
        if not source or not target:
            empty, other = (sp, tp) if not source else (tp, sp)
            raise DataError(f"{empty}:{number}: blank line, but {other}:{number} is not")
        pairs.append(Pair(source, target))
    if not pairs:
        raise DataError(f"{sp}, {tp}: no pairs found")
    return pairs


def read_parallel(
    path: str | os.PathLike[str],
    target_path: str | os.PathLike[str] | None = None,
    encoding: str = "utf-8",
) -> list[Pair]:
    """``read_aligned(path, target_path)`` if a target file is given, else ``read_tsv``."""
    if target_path is not None:
        return read_aligned(path, target_path, encoding)
    return read_tsv(path, encoding)
