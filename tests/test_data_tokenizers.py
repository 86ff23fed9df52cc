"""Tokenizers: round trips, the word-level conventions, saving, and bad inputs."""

import functools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data import (
    SPECIALS,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)

UNICODE_TEXT = (
    "Grüße aus Köln, 日本語のテキスト, emoji 🙂🚀 and tabs\tand  double  spaces.\n"
    "Zweite Zeile: naïve café, ελληνικά, русский.\r\n"
    "\n"
    "  indented line with <unk> and <eos> written out\n"
    "last line without newline"
)
PTB_LIKE = " the cat sat on the mat \n the dog sat \n a <unk> cat \n"


@functools.cache
def trained(kind: str) -> Tokenizer:
    """One tokenizer per kind, trained once for the whole module."""
    return train_tokenizer(
        kind, [UNICODE_TEXT, PTB_LIKE], vocab_size=400 if kind == "bpe" else None
    )


def through_json(tok: Tokenizer) -> Tokenizer:
    return tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_specials_hold_ids_0_to_3(kind):
    tok = trained(kind)
    assert tok.kind == kind
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert [tok.id_of(s) for s in SPECIALS] == [0, 1, 2, 3]
    assert tok.vocab_size > len(SPECIALS)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_char_and_bpe_round_trip_exactly(kind):
    tok = trained(kind)
    ids = tok.encode(UNICODE_TEXT)
    assert tok.unk_id not in ids
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == UNICODE_TEXT
    assert tok.encode_array(UNICODE_TEXT).tolist() == ids


def test_word_round_trip_restores_words_and_lines():
    tok = trained("word")
    text = "the cat sat\nthe dog\n\na cat\n"
    assert tok.decode(tok.encode(text)) == text
    # Spacing is normalised: words joined by one space, line structure kept.
    assert tok.decode(tok.encode("  the   cat \n dog\n")) == "the cat\ndog\n"


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_round_trip_through_json(kind):
    tok = trained(kind)
    restored = through_json(tok)
    assert type(restored) is type(tok)
    assert restored == tok
    assert restored.vocab_size == tok.vocab_size
    for text in (UNICODE_TEXT, PTB_LIKE, "unseen ✓ text"):
        assert restored.encode(text) == tok.encode(text)
    ids = tok.encode(UNICODE_TEXT)
    assert restored.decode(ids, skip_special=False) == tok.decode(ids, skip_special=False)
    assert [restored.token_text(i) for i in range(tok.vocab_size)] == [
        tok.token_text(i) for i in range(tok.vocab_size)
    ]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_bpe_round_trips_any_text(text):
    tok = trained("bpe")
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == text
    assert "".join(tok.decode_stream(ids)) == text


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=sorted(set(UNICODE_TEXT)), max_size=80))
def test_char_round_trips_text_of_its_alphabet(text):
    tok = trained("char")
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert "".join(tok.token_text(i) for i in ids) == text
    assert tok.encode_array(text).tolist() == ids


def test_char_vocabulary_is_every_distinct_character():
    tok = train_tokenizer("char", ["ba\nc", "a€"])
    assert isinstance(tok, CharTokenizer)
    assert tok.tokens == [*SPECIALS, "\n", "a", "b", "c", "€"]
    assert tok.encode("z€a") == [tok.unk_id, tok.id_of("€"), tok.id_of("a")]
    assert tok.unknown("zaz§") == ["z", "§"]
    assert tok.encode_array("z€a").tolist() == tok.encode("z€a")


def test_word_eos_at_every_line_end():
    tok = train_tokenizer("word", ["a b\nc\n"])
    a, b, c = (tok.id_of(w) for w in "abc")
    assert tok.encode("a b\nc\n") == [a, b, tok.eos_id, c, tok.eos_id]
    assert tok.encode("a\n\nb") == [a, tok.eos_id, tok.eos_id, b]  # no <eos> without a newline
    assert tok.decode([a, b, tok.eos_id, c, tok.eos_id]) == "a b\nc\n"
    assert tok.id_of("<eos>") == tok.eos_id


def test_word_literal_unk_is_unk_and_not_a_word():
    tok = trained("word")
    assert isinstance(tok, WordTokenizer)
    assert tok.tokens.count("<unk>") == 1  # only the special
    ids = tok.encode("a <unk> cat\n")
    assert ids == [tok.id_of("a"), tok.unk_id, tok.id_of("cat"), tok.eos_id]
    assert tok.decode(ids) == "a <unk> cat\n"  # Penn Treebank text reads back as it was
    assert tok.encode("zebra") == [tok.unk_id]
    assert tok.unknown("the zebra or the gnu") == ["zebra", "or", "gnu"]


def test_word_min_count_and_vocab_size():
    text = "x x x x y y y z z w\n"
    by_count = train_tokenizer("word", [text], min_count=2)
    assert by_count.tokens[len(SPECIALS) :] == ["x", "y", "z"]  # most frequent first
    assert by_count.encode("w") == [by_count.unk_id]
    by_size = train_tokenizer("word", [text], vocab_size=len(SPECIALS) + 2)
    assert by_size.vocab_size == 6
    assert by_size.tokens[len(SPECIALS) :] == ["x", "y"]
    assert by_size.encode("x z w\n") == [4, 1, 1, 3]
    # Ties keep first-seen order, so training is deterministic.
    assert train_tokenizer("word", ["b a c"]).tokens[len(SPECIALS) :] == ["b", "a", "c"]


def test_char_vocab_size_keeps_most_frequent():
    tok = train_tokenizer("char", ["aaabbc"], vocab_size=len(SPECIALS) + 2)
    assert tok.tokens[len(SPECIALS) :] == ["a", "b"]
    assert tok.encode("abc") == [4, 5, tok.unk_id]


def test_bpe_respects_vocab_size_and_learns_merges():
    tok = train_tokenizer(
        "bpe", [UNICODE_TEXT, PTB_LIKE, "the then there these " * 50], vocab_size=270
    )
    assert isinstance(tok, BPETokenizer)
    assert tok.vocab_size == 270
    assert len(tok.encode("the then")) < len("the then")
    assert tok.encode("<unk>") != [tok.unk_id]  # specials in text are plain bytes


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_decode_accepts_tensors_and_numpy(kind):
    tok = trained(kind)
    ids = tok.encode("the cat\n")
    assert tok.decode(torch.tensor(ids)) == tok.decode(ids)
    assert tok.decode(np.array(ids)) == tok.decode(ids)
    assert tok.token_text(torch.tensor(ids[0])) == tok.token_text(ids[0])


def test_decode_specials():
    for kind in ("char", "bpe"):
        tok = trained(kind)
        ids = [tok.bos_id, *tok.encode("ab"), tok.unk_id, tok.eos_id, tok.pad_id]
        assert tok.decode(ids) == "ab"
        assert tok.decode(ids, skip_special=False) == "<bos>ab<unk><eos><pad>"
        assert [tok.token_text(i) for i in SPECIALS_IDS] == ["", "<unk>", "", ""]
    tok = trained("word")
    ids = [tok.bos_id, tok.id_of("the"), tok.unk_id, tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == "the <unk>\n"
    assert tok.decode(ids, skip_special=False) == "<bos> the <unk>\n<pad>"
    assert [tok.token_text(i) for i in SPECIALS_IDS] == ["", " <unk>", "", "\n"]
    assert tok.token_text(tok.id_of("cat")) == " cat"


SPECIALS_IDS = range(len(SPECIALS))


def test_bpe_stream_holds_back_split_characters():
    tok = train_tokenizer("bpe", ["plain ascii text only"], vocab_size=300)
    ids = tok.encode("日本")  # no merges for these: one id per UTF-8 byte
    assert len(ids) == 6
    pieces = list(tok.decode_stream(ids))
    assert len(pieces) == len(ids)
    assert pieces == ["", "", "日", "", "", "本"]
    assert tok.token_text(ids[0]) == "\ufffd"  # a lone byte cannot be shown exactly
    stream = tok.text_stream()  # what a sampler keeps per sequence
    assert [stream.push(i) for i in ids[:4]] == ["", "", "日", ""]
    assert stream.push(tok.eos_id) == "\ufffd"  # a special flushes the broken character
    assert stream.flush() == ""
    assert list(tok.decode_stream(ids[:4])) == ["", "", "日", "", "\ufffd"]


@pytest.mark.parametrize("kind", ["char", "word"])
def test_text_stream_is_token_text(kind):
    tok = trained(kind)
    ids = tok.encode("the cat\n")
    stream = tok.text_stream()
    assert [stream.push(i) for i in ids] == [tok.token_text(i) for i in ids]
    assert stream.flush() == ""


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_bad_ids_and_tokens(kind):
    tok = trained(kind)
    with pytest.raises(ValueError, match=rf"token id {tok.vocab_size} is out of range"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        tok.token_text(-1)
    with pytest.raises(TypeError, match=r"token ids must be integers, got 1\.0"):
        tok.decode([1.0])
    with pytest.raises(TypeError, match="token ids must be integers, got True"):
        tok.token_text(True)
    with pytest.raises(KeyError, match=rf"token 'no-such-token' is not in the {kind} vocabulary"):
        tok.id_of("no-such-token")


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_empty_training_text(kind):
    with pytest.raises(
        ValueError, match=f"cannot train a {kind} tokenizer: the training text is empty"
    ):
        train_tokenizer(kind, ["", ""])
    with pytest.raises(ValueError, match="training text is empty"):
        train_tokenizer(kind, [])


def test_nothing_learned():
    with pytest.raises(ValueError, match="holds no words, only whitespace or special tokens"):
        train_tokenizer("word", [" \n\n <unk> \n"])
    with pytest.raises(
        ValueError, match=r"no token occurs at least min_count=5 times \(the most frequent, 'a'"
    ):
        train_tokenizer("word", ["a a b"], min_count=5)
    with pytest.raises(ValueError, match="holds only the special tokens"):
        CharTokenizer(SPECIALS)


def test_single_token_vocabulary():
    for kind in ("char", "bpe"):
        with pytest.raises(
            ValueError,
            match=rf"cannot train a {kind} tokenizer: the training text has a single distinct "
            r"character, 'a', so a language model would have nothing to predict",
        ):
            train_tokenizer(kind, ["aaaa", "aa"])
    with pytest.raises(ValueError, match="has a single distinct word, 'ha'"):
        train_tokenizer("word", ["ha ha  ha"])
    # Two outcomes are enough: a word and the line end, or a char and <unk>.
    assert train_tokenizer("word", ["ha ha\nha\n"]).tokens[len(SPECIALS) :] == ["ha"]
    assert train_tokenizer("char", ["aab"], vocab_size=5).tokens[len(SPECIALS) :] == ["a"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown tokenizer kind 'sentencepiece'"):
        train_tokenizer("sentencepiece", ["abc"])
    with pytest.raises(ValueError, match=r"vocab_size must exceed the 4 special tokens.*got 4"):
        train_tokenizer("char", ["abc"], vocab_size=4)
    with pytest.raises(ValueError, match=r"vocab_size >= 260.*got 100"):
        train_tokenizer("bpe", ["abc"], vocab_size=100)
    with pytest.raises(ValueError, match="min_count must be a positive integer, got 0"):
        train_tokenizer("word", ["abc"], min_count=0)
    for kind in ("char", "word", "bpe"):
        with pytest.raises(TypeError, match="training texts must be strings, got bytes"):
            train_tokenizer(kind, [b"abc"])


def test_from_dict_rejects_bad_dicts():
    good = trained("char").to_dict()
    with pytest.raises(ValueError, match="unknown tokenizer kind 'morse'"):
        tokenizer_from_dict({**good, "kind": "morse"})
    with pytest.raises(ValueError, match="not a saved rnnkit tokenizer: format None"):
        tokenizer_from_dict({"kind": "char", "tokens": list(SPECIALS)})
    with pytest.raises(ValueError, match="format version 99"):
        tokenizer_from_dict({**good, "version": 99})
    with pytest.raises(ValueError, match="must start with the specials"):
        tokenizer_from_dict({**good, "tokens": ["a", *good["tokens"]]})
    with pytest.raises(ValueError, match="needs an 'hf_json' string"):
        tokenizer_from_dict({**good, "kind": "bpe"})
    with pytest.raises(ValueError, match="char vocabulary entries must be single characters"):
        tokenizer_from_dict({**good, "tokens": [*SPECIALS, "ab"]})
    with pytest.raises(ValueError, match="word vocabulary entries must be words without"):
        tokenizer_from_dict({**good, "kind": "word", "tokens": [*SPECIALS, "a b"]})
    with pytest.raises(ValueError, match=r"vocabulary repeats tokens \['a'\]"):
        tokenizer_from_dict({**good, "tokens": [*SPECIALS, "a", "a"]})


def test_from_dict_rejects_other_hugging_face_tokenizers():
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    hf = HFTokenizer(models.WordLevel({s: i for i, s in enumerate([*SPECIALS, "a"])}, "<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    saved = {**trained("bpe").to_dict(), "hf_json": hf.to_str()}
    with pytest.raises(ValueError, match=r"a bpe tokenizer must be byte-level BPE.*'WordLevel'"):
        tokenizer_from_dict(saved)
    with pytest.raises(ValueError, match="not a Hugging Face tokenizer JSON string"):
        tokenizer_from_dict({**saved, "hf_json": "{not json"})
