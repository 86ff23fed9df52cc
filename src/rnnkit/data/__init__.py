"""Data shared by the tasks: tokenizers and vocabularies, text files of any size, padded
batches.

tok = rnnkit.data.train_tokenizer("char", rnnkit.data.iter_text("input.txt"))
ids = rnnkit.data.encode_file(tok, "input.txt")              # int64 [N]
"""

from rnnkit.data.text import DataError, EncodingError, encode_file, iter_text, read_text
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
    "EncodingError",
    "TextStream",
    "Tokenizer",
    "WordTokenizer",
    "encode_file",
    "iter_text",
    "read_text",
    "tokenizer_from_dict",
    "train_tokenizer",
]
