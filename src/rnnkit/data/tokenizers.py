"""Tokenizers for language modelling: characters, words, and byte-level BPE subwords.

Every tokenizer reserves the same four special tokens at the same ids::

    <pad> 0    <unk> 1    <bos> 2    <eos> 3

and saves itself as a JSON-able dict (``to_dict``) that ``tokenizer_from_dict`` restores
exactly, so a checkpoint carries the tokenizer its model was trained with.

How specials read back as text (``decode`` and ``token_text``):

- ``decode(ids, skip_special=True)`` drops ``<pad> <unk> <bos> <eos>``; with
  ``skip_special=False`` each is written as its name.
- ``token_text(id)`` is what one id adds to text streamed token by token: nothing for
  ``<pad> <bos> <eos>``, and ``"<unk>"`` for ``<unk>``, so an unknown token that a
  sampler was allowed to emit stays visible.
- The word tokenizer is the exception in both: there ``<eos>`` is the line break
  (always ``"\\n"``) and ``<unk>`` is a word of the corpus (Penn Treebank ships with
  it), always written ``"<unk>"``.
"""

from __future__ import annotations

import codecs
import functools
import json
import operator
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, NoReturn

import numpy as np

from rnnkit.common.checks import positive_int

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
KINDS = ("char", "word", "bpe")
FORMAT = "rnnkit.tokenizer"
FORMAT_VERSION = 1
DEFAULT_BPE_VOCAB_SIZE = 4096


class Tokenizer:
    """Base class: text <-> ids with the four specials at ids 0-3."""

    kind: ClassVar[str] = ""
    pad_id: ClassVar[int] = PAD_ID
    unk_id: ClassVar[int] = UNK_ID
    bos_id: ClassVar[int] = BOS_ID
    eos_id: ClassVar[int] = EOS_ID

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` as an int64 NumPy array (subclasses make it fast for big chunks)."""
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        raise NotImplementedError

    def token_text(self, id: int) -> str:
        """The text one id contributes when output is streamed token by token."""
        raise NotImplementedError

    def text_stream(self) -> TextStream:
        """A decoder for one sequence streamed token by token: ``push(id)`` returns the
        text to print now, ``flush()`` what is left at the end. Keep one per sequence:
        byte-level BPE holds back a multibyte character split across tokens until it is
        complete."""
        return TextStream(self)

    def decode_stream(self, ids: Iterable[int]) -> Iterator[str]:
        """The text of ``ids`` one piece per id, through one ``text_stream``; the pieces
        (and a final one if the stream ends mid-character) join to the streamed text."""
        stream = self.text_stream()
        for i in ids:
            yield stream.push(i)
        tail = stream.flush()
        if tail:
            yield tail

    def id_of(self, token: str) -> int:
        """The id of one vocabulary entry; KeyError naming the token if absent."""
        raise NotImplementedError

    def unknown(self, text: str) -> list[str]:
        """The distinct pieces of ``text`` that would encode as ``<unk>``, in order."""
        return []

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def _check_id(self, id: int) -> int:
        try:  # ints, NumPy integers, one-element integer tensors
            if isinstance(id, bool):
                raise TypeError
            id = operator.index(id)
        except TypeError:
            raise TypeError(f"token ids must be integers, got {id!r}") from None
        if not 0 <= id < self.vocab_size:
            raise ValueError(
                f"token id {id} is out of range for this {self.kind} tokenizer "
                f"(vocabulary of {self.vocab_size}: ids 0..{self.vocab_size - 1})"
            )
        return id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class TextStream:
    """Streams one sequence's text token by token (``Tokenizer.text_stream``)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def push(self, id: int) -> str:
        """The text that ``id`` completes (``token_text`` but for held-back bytes)."""
        return self.tokenizer.token_text(id)

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character shows as U+FFFD)."""
        return ""


class _ByteTextStream(TextStream):
    tokenizer: BPETokenizer

    def __init__(self, tokenizer: BPETokenizer):
        super().__init__(tokenizer)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, id: int) -> str:
        if self.tokenizer._check_id(id) < len(SPECIALS):
            return self.flush() + self.tokenizer.token_text(id)
        return self._utf8.decode(self.tokenizer.token_bytes(id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class _VocabTokenizer(Tokenizer):
    """A tokenizer that is a list of token strings: id i is ``tokens[i]``."""

    def __init__(self, tokens: Iterable[str]):
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(
                f"a {self.kind} vocabulary must start with the specials {SPECIALS}, "
                f"got {tokens[: len(SPECIALS)]}"
            )
        if len(tokens) <= len(SPECIALS):
            raise ValueError(
                f"the {self.kind} vocabulary holds only the special tokens {SPECIALS}: "
                "nothing was learned from the training text"
            )
        duplicates = [t for t, n in Counter(tokens).items() if n > 1]
        if duplicates:
            raise ValueError(f"the {self.kind} vocabulary repeats tokens {duplicates[:5]}")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def id_of(self, token: str) -> int:
        try:
            return self.index[token]
        except KeyError:
            raise KeyError(
                f"token {token!r} is not in the {self.kind} vocabulary ({self.vocab_size} tokens)"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "tokens": list(self.tokens),
        }


class CharTokenizer(_VocabTokenizer):
    """One id per character (newline included), as in Karpathy's char-rnn.

    Characters unseen in training encode as ``<unk>``; ``unknown(text)`` lists them.
    """

    kind = "char"

    def __init__(self, tokens: Iterable[str]):
        super().__init__(tokens)
        bad = [t for t in self.tokens[len(SPECIALS) :] if len(t) != 1]
        if bad:
            raise ValueError(f"char vocabulary entries must be single characters, got {bad[:5]}")
        # Sorted code points and their ids, for a vectorised lookup of big chunks.
        chars = sorted(self.tokens[len(SPECIALS) :])
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._code_ids = np.array([self.index[c] for c in chars], dtype=np.int64)

    def encode(self, text: str) -> list[int]:
        get = self.index.get
        return [get(c, UNK_ID) for c in text]

    def encode_array(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # [N]
        pos = np.searchsorted(self._codes, codes).clip(max=len(self._codes) - 1)
        found = self._codes[pos] == codes
        return np.where(found, self._code_ids[pos], UNK_ID).astype(np.int64)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        out = []
        for i in ids:
            i = self._check_id(i)
            if i >= len(SPECIALS):
                out.append(self.tokens[i])
            elif not skip_special:
                out.append(SPECIALS[i])
        return "".join(out)

    def token_text(self, id: int) -> str:
        id = self._check_id(id)
        if id >= len(SPECIALS):
            return self.tokens[id]
        return SPECIALS[id] if id == UNK_ID else ""

    def unknown(self, text: str) -> list[str]:
        return list(dict.fromkeys(c for c in text if c not in self.index))


class WordTokenizer(_VocabTokenizer):
    """Whitespace-separated words; the end of every line is ``<eos>``.

    The Penn Treebank convention (Mikolov et al. 2010; Zaremba et al. 2014's data):
    ``encode("a b\\nc\\n")`` is ``[a, b, <eos>, c, <eos>]``. A final line without a
    newline gets no ``<eos>``, so a priming text does not end a sentence. A literal
    ``<unk>`` in the text (Penn Treebank has them) is ``unk_id``; a literal special name
    is that special's id. ``decode`` joins words with single spaces and writes each
    ``<eos>`` as a newline, so it restores the text up to spacing.
    """

    kind = "word"

    def __init__(self, tokens: Iterable[str]):
        super().__init__(tokens)
        bad = [
            t
            for t in self.tokens[len(SPECIALS) :]
            if not t or len(t.split()) != 1 or t != t.strip()
        ]
        if bad:
            raise ValueError(
                f"word vocabulary entries must be words without whitespace, got {bad[:5]}"
            )

    def encode(self, text: str) -> list[int]:
        get = self.index.get
        ids: list[int] = []
        lines = text.split("\n")
        for n, line in enumerate(lines):
            ids.extend(get(w, UNK_ID) for w in line.split())
            if n < len(lines) - 1:
                ids.append(EOS_ID)
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        out: list[str] = []
        line_start = True
        for i in ids:
            i = self._check_id(i)
            if i == EOS_ID:
                out.append("\n")
                line_start = True
                continue
            if i in (PAD_ID, BOS_ID) and skip_special:
                continue
            out.append(self.tokens[i] if line_start else " " + self.tokens[i])
            line_start = False
        return "".join(out)

    def token_text(self, id: int) -> str:
        """``" word"`` (with its leading space, so it continues a priming text); ``"\\n"``
        for ``<eos>``; nothing for ``<pad>`` and ``<bos>``."""
        id = self._check_id(id)
        if id == EOS_ID:
            return "\n"
        if id in (PAD_ID, BOS_ID):
            return ""
        return " " + self.tokens[id]

    def unknown(self, text: str) -> list[str]:
        return list(dict.fromkeys(w for w in text.split() if w not in self.index))


@functools.cache
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted (char -> byte).

    Radford et al. 2019's byte-level BPE (and Hugging Face's ``ByteLevel``) maps every
    byte to a printable character so that merges never see whitespace or control bytes.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


class BPETokenizer(Tokenizer):
    """Byte-level BPE (Sennrich et al. 2016; the byte-level form of GPT-2) through
    Hugging Face ``tokenizers``.

    Byte level means every text encodes without ``<unk>`` and decodes back exactly.
    Special names written in the text are encoded as plain bytes, never as specials,
    so the round trip also holds for text that contains ``<unk>``.
    """

    kind = "bpe"

    def __init__(self, hf_json: str):
        from tokenizers import Tokenizer as HFTokenizer

        try:
            spec = json.loads(hf_json)
            hf = HFTokenizer.from_str(hf_json)
        except Exception as err:
            raise ValueError(f"not a Hugging Face tokenizer JSON string: {err}") from err
        parts = {key: (spec.get(key) or {}) for key in ("model", "pre_tokenizer", "decoder")}
        if (
            parts["model"].get("type") != "BPE"
            or parts["pre_tokenizer"].get("type") != "ByteLevel"
            or parts["pre_tokenizer"].get("add_prefix_space")
            or parts["decoder"].get("type") != "ByteLevel"
        ):
            types = {key: part.get("type") for key, part in parts.items()}
            raise ValueError(
                "a bpe tokenizer must be byte-level BPE (model BPE, ByteLevel pre-tokenizer "
                f"without prefix space, ByteLevel decoder), got {types}"
            )
        found = tuple(hf.id_to_token(i) for i in range(len(SPECIALS)))
        if found != SPECIALS:
            raise ValueError(
                f"a bpe vocabulary must start with the specials {SPECIALS}, got {found}"
            )
        if hf.get_vocab_size() <= len(SPECIALS):
            raise ValueError(
                f"the bpe vocabulary holds only the special tokens {SPECIALS}: "
                "nothing was learned from the training text"
            )
        hf.encode_special_tokens = True  # not saved in the JSON: set on every load
        self.hf = hf
        self.hf_json = hf_json
        self._byte_of = _byte_level_alphabet()  # token character -> byte

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        pieces: list[str] = []
        run: list[int] = []
        for i in ids:
            i = self._check_id(i)
            if i >= len(SPECIALS):
                run.append(i)
                continue
            if run:
                pieces.append(self.hf.decode(run, skip_special_tokens=False))
                run = []
            if not skip_special:
                pieces.append(SPECIALS[i])
        if run:
            pieces.append(self.hf.decode(run, skip_special_tokens=False))
        return "".join(pieces)

    def token_bytes(self, id: int) -> bytes:
        """The UTF-8 bytes one non-special token stands for."""
        id = self._check_id(id)
        if id < len(SPECIALS):
            return b""
        return bytes(self._byte_of[c] for c in self.hf.id_to_token(id) or "")

    def token_text(self, id: int) -> str:
        """The token's bytes as text; a token holding part of a multibyte character
        shows U+FFFD, so stream with ``text_stream`` for exact output."""
        id = self._check_id(id)
        if id < len(SPECIALS):
            return SPECIALS[id] if id == UNK_ID else ""
        return self.token_bytes(id).decode("utf-8", errors="replace")

    def text_stream(self) -> TextStream:
        return _ByteTextStream(self)

    def id_of(self, token: str) -> int:
        i = self.hf.token_to_id(token)
        if i is None:
            raise KeyError(
                f"token {token!r} is not in the bpe vocabulary ({self.vocab_size} tokens; "
                "tokens are written in byte-level form, a space as 'Ġ')"
            )
        return int(i)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": FORMAT_VERSION, "kind": "bpe", "hf_json": self.hf_json}


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Restore a tokenizer saved by ``to_dict`` (exactly: same ids, same text)."""
    if not isinstance(d, dict):
        raise TypeError(f"a saved tokenizer is a dict, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise ValueError(
            f"not a saved rnnkit tokenizer: format {d.get('format')!r}, want {FORMAT!r}"
        )
    if d.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"saved tokenizer has format version {d.get('version')!r}; "
            f"this rnnkit reads version {FORMAT_VERSION}"
        )
    kind = d.get("kind")
    if kind in ("char", "word"):
        if not isinstance(d.get("tokens"), list):
            raise ValueError(f"a saved {kind} tokenizer needs a 'tokens' list")
        return (CharTokenizer if kind == "char" else WordTokenizer)(d["tokens"])
    if kind == "bpe":
        if not isinstance(d.get("hf_json"), str):
            raise ValueError("a saved bpe tokenizer needs an 'hf_json' string")
        return BPETokenizer(d["hf_json"])
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {KINDS}")


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    *,
    vocab_size: int | None = None,
    min_count: int = 1,
) -> Tokenizer:
    """Learn a tokenizer of ``kind`` ("char", "word", "bpe") from ``texts``.

    Raises ValueError for an unknown kind, an empty text, and a text that leaves a
    model nothing to predict (only special tokens, or a single distinct token).

    ``texts`` is any iterable of strings (a list, or ``iter_text(path)`` for a big
    file); they are read once. ``vocab_size`` counts every id, the four specials
    included: char and word keep the ``vocab_size - 4`` most frequent tokens seen at
    least ``min_count`` times (None: all of them) and encode the rest as ``<unk>``;
    bpe learns merges until ``vocab_size`` (default 4096) or until no pair occurs
    ``min_count`` times. Penn Treebank's text already holds exactly its 10k-word
    vocabulary (``<unk>`` and line ends included): leave ``vocab_size`` None there, as
    10000 would count the four specials and drop two rare words.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {KINDS}")
    if isinstance(texts, str):
        texts = [texts]
    positive_int("min_count", min_count)
    if vocab_size is not None:
        positive_int("vocab_size", vocab_size)
        if vocab_size <= len(SPECIALS):
            raise ValueError(
                f"vocab_size must exceed the {len(SPECIALS)} special tokens {SPECIALS}, "
                f"got {vocab_size}"
            )
    if kind == "bpe":
        return _train_bpe(texts, vocab_size or DEFAULT_BPE_VOCAB_SIZE, min_count)

    counts: Counter[str] = Counter()
    total = 0
    line_ends = False
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"training texts must be strings, got {type(text).__name__}")
        total += len(text)
        counts.update(text if kind == "char" else text.split())
        line_ends = line_ends or "\n" in text
    if total == 0:
        raise ValueError(f"cannot train a {kind} tokenizer: the training text is empty")
    for special in SPECIALS:
        counts.pop(special, None)  # a literal <unk> in the text is unk, not a new word
    if not counts:
        raise ValueError(
            f"cannot train a {kind} tokenizer: the training text holds no "
            f"{'characters' if kind == 'char' else 'words'}, only whitespace or special tokens"
        )
    # Most frequent first; ties keep first-seen order, so training is deterministic.
    kept = [t for t, n in counts.most_common() if n >= min_count]
    if vocab_size is not None:
        kept = kept[: vocab_size - len(SPECIALS)]
    if not kept:
        top, n = counts.most_common(1)[0]
        raise ValueError(
            f"cannot train a {kind} tokenizer: no token occurs at least min_count={min_count} "
            f"times (the most frequent, {top!r}, occurs {n} times); the vocabulary would hold "
            "only the special tokens"
        )
    # What a model trained on this text predicts: the kept tokens, <unk> if some were
    # dropped, and a word model's <eos>. Fewer than two leaves nothing to learn.
    outcomes = len(kept) + (len(kept) < len(counts)) + (kind == "word" and line_ends)
    if outcomes < 2:
        _single_token_error(kind, kept[0])
    if kind == "char":
        return CharTokenizer([*SPECIALS, *sorted(kept)])
    return WordTokenizer([*SPECIALS, *kept])


def _single_token_error(kind: str, token: str) -> NoReturn:
    unit = "character" if kind in ("char", "bpe") else "word"
    raise ValueError(
        f"cannot train a {kind} tokenizer: the training text has a single distinct {unit}, "
        f"{token!r}, so a language model would have nothing to predict; it needs at least two"
    )


def _train_bpe(texts: Iterable[str], vocab_size: int, min_count: int) -> BPETokenizer:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(SPECIALS) + len(alphabet):
        raise ValueError(
            f"a byte-level bpe vocabulary needs vocab_size >= {len(SPECIALS) + len(alphabet)} "
            f"(4 specials + 256 bytes), got {vocab_size}"
        )
    total = 0
    chars: set[str] = set()

    def checked() -> Iterator[str]:
        nonlocal total
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"training texts must be strings, got {type(text).__name__}")
            total += len(text)
            if len(chars) < 2:
                chars.update(text)
            yield text

    hf = HFTokenizer(models.BPE())
    # No prefix space: encoding a file chunk by chunk must equal encoding it whole.
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_count,
        special_tokens=list(SPECIALS),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    hf.train_from_iterator(checked(), trainer=trainer)
    if total == 0:
        raise ValueError("cannot train a bpe tokenizer: the training text is empty")
    if len(chars) < 2:
        _single_token_error("bpe", chars.pop())
    return BPETokenizer(hf.to_str())
