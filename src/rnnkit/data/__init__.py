"""Data shared by the tasks: tokenizers and vocabularies, text files of any size, their
token ids in memory or memory-mapped, padded batches.

tok = rnnkit.data.train_tokenizer("char", rnnkit.data.iter_text("input.txt"))
ids = rnnkit.data.encode_file(tok, "input.txt")              # int64 [N]
ids = rnnkit.data.encode_ids(tok, "input.txt")               # uint8 [N] (id_dtype)
ids = rnnkit.data.cached_ids(tok, "input.txt", "run/cache/train.ids")  # uint8 [N], mapped
"""

from rnnkit.data.ids import cached_ids, encode_file, encode_ids, id_dtype
from rnnkit.data.text import DataError, EncodingError, iter_text, read_text
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
    "cached_ids",
    "encode_file",
    "encode_ids",
    "id_dtype",
    "iter_text",
    "read_text",
    "tokenizer_from_dict",
    "train_tokenizer",
]
