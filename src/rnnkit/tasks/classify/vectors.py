"""Pretrained word vectors from a word2vec or GloVe text file the user supplies.

GloVe files are ``word v1 v2 ... vD`` per line; word2vec text files add a first line
``count D``. Words missing from the file keep their random initialisation.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from rnnkit.data.text import DataError, iter_text


def load_vectors(
    path: str | os.PathLike[str], vocabulary: dict[str, int], embedding: Tensor
) -> int:
    """Copy the vectors of the words in ``vocabulary`` (word -> row) into ``embedding``
    [V, D] in place; returns how many words were found. Raises DataError on a width that
    does not match D or a malformed line (file and line named)."""
    p = Path(path)
    D = embedding.shape[1]
    found = 0
    carry = ""
    number = 0
    with torch.no_grad():
        for chunk in iter_text(p):
            lines = (carry + chunk).split("\n")
            carry = lines.pop()
            for line in lines:
                number += 1
                found += _line(p, number, line, D, vocabulary, embedding)
        if carry:
            found += _line(p, number + 1, carry, D, vocabulary, embedding)
    return found


def _line(path: Path, number: int, line: str, D: int, vocab: dict[str, int], out: Tensor) -> int:
    parts = line.rstrip().split(" ")
    if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
        if int(parts[1]) != D:
            raise DataError(f"{path}:1: vectors have {parts[1]} dimensions, the model {D}")
        return 0  # the word2vec header
    if len(parts) <= 1:
        return 0
    if len(parts) != D + 1:
        raise DataError(f"{path}:{number}: {len(parts) - 1} values, expected {D}")
    row = vocab.get(parts[0])
    if row is None:
        return 0
    try:
        out[row] = torch.tensor([float(v) for v in parts[1:]], dtype=out.dtype)
    except ValueError:
        raise DataError(f"{path}:{number}: a value is not a number") from None
    return 1
