"""Data for language modelling: tokenizers, text files of any size, and LM batches.

tok = rnnkit.data.train_tokenizer("char", rnnkit.data.iter_text("input.txt"))
ids = rnnkit.data.encode_file(tok, "input.txt")              # int64 [N]
train, valid = rnnkit.data.split_train_valid(ids, 0.1)
for inputs, targets in rnnkit.data.LMBatches(train, 64, 100):  # each [T, B]
"""

from rnnkit.data.batching import LMBatches, split_train_valid
from rnnkit.data.text import DataError, encode_file, iter_text, read_text
from rnnkit.data.tokenizers import (
    SPECIALS,
    BPETokenizer,
    CharTokenizer,
    TextStream,
    Tokenizer,
    WordTokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)

__all__ = [
    "SPECIALS",
    "BPETokenizer",
    "CharTokenizer",
    "DataError",
    "LMBatches",
    "TextStream",
    "Tokenizer",
    "WordTokenizer",
    "encode_file",
    "iter_text",
    "read_text",
    "split_train_valid",
    "tokenizer_from_dict",
    "train_tokenizer",
]
