"""Readers for labelled sentences (sequence classification, many-to-one).

Formats, chosen by ``format`` or the file's suffix:
    "sst"    one example per line, ``label<space>text`` (the SST files); the default
    "csv"    comma-separated with a header; ``text_column`` and ``label_column`` name columns
    "tsv"    the same, tab-separated
    "jsonl"  one JSON object per line with the two keys
Labels stay strings; ``LabelSet`` maps them to ids and is saved with a model.
Errors name the file and the line.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data.text import DataError, read_text

FORMATS = ("sst", "csv", "tsv", "jsonl")


@dataclass(frozen=True)
class Example:
    text: str
    label: str


def _format_of(path: Path, format: str | None) -> str:
    if format is None:
        format = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}.get(path.suffix.lower(), "sst")
    if format not in FORMATS:
        raise DataError(f"format must be one of {FORMATS}, got {format!r}")
    return format


def read_labelled(
    path: str | os.PathLike[str],
    format: str | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    encoding: str = "utf-8",
) -> list[Example]:
    """Every example of a labelled file; raises DataError naming the file and line."""
    p = Path(path)
    kind = _format_of(p, format)
    lines = read_text(p, encoding).splitlines()
    if kind == "sst":
        examples = list(_sst(p, lines))
    elif kind == "jsonl":
        examples = list(_jsonl(p, lines, text_column, label_column))
    else:
        examples = list(
            _delimited(p, lines, "," if kind == "csv" else "\t", text_column, label_column)
        )
    if not examples:
        raise DataError(f"{p}: no examples found")
    return examples


def _sst(path: Path, lines: list[str]) -> Iterable[Example]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        label, _, text = line.strip().partition(" ")
        if not text.strip():
            raise DataError(
                f"{path}:{number}: expected 'label<space>text', got {line.strip()[:60]!r}"
            )
        yield Example(text.strip(), label)


def _jsonl(path: Path, lines: list[str], text_key: str, label_key: str) -> Iterable[Example]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict) or text_key not in record or label_key not in record:
            raise DataError(
                f"{path}:{number}: expected an object with keys {text_key!r} and {label_key!r}"
            )
        yield Example(str(record[text_key]), str(record[label_key]))


def _delimited(
    path: Path, lines: list[str], delimiter: str, text_col: str, label_col: str
) -> Iterable[Example]:
    rows = csv.reader(lines, delimiter=delimiter)
    header = next(rows, None)
    if header is None:
        raise DataError(f"{path}: empty file, expected a header row")
    for name in (text_col, label_col):
        if name not in header:
            raise DataError(f"{path}:1: no column {name!r} in the header {header}")
    ti, li = header.index(text_col), header.index(label_col)
    for row in rows:
        number = rows.line_num
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{number}: {len(row)} columns, the header has {len(header)}")
        yield Example(row[ti], row[li])


@dataclass(frozen=True)
class LabelSet:
    """Label names <-> ids, in a stable order (sorted names)."""

    names: tuple[str, ...]

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> LabelSet:
        names = tuple(sorted(set(labels)))
        if len(names) < 2:
            raise DataError(f"classification needs at least two labels, found {list(names)}")
        return cls(names)

    def id(self, label: str) -> int:
        try:
            return self.names.index(label)
        except ValueError:
            raise DataError(f"unknown label {label!r}; known labels: {list(self.names)}") from None

    def to_dict(self) -> dict:
        return {"names": list(self.names)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelSet:
        return cls(tuple(d["names"]))
