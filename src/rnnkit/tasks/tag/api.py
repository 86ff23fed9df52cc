"""Sequence tagging (named entities) as a trainer task, and its Python API.

    from rnnkit.tasks.tag import api as tag
    run = tag.train(tag.configure(data={"train": "eng.train", "valid": "eng.testa"}))
    spans = tag.predict(run.out_dir, [["Peter", "Blackburn", "visited", "Paris"]])

Following Lample et al. 2016 (section 4): words are looked up lowercased with digits
replaced by 0 while the character BiRNN sees the original word; words seen once in
training are replaced by <unk> with probability ``singleton_unk`` so that the <unk>
embedding is trained; tags are converted to ``data.train_scheme`` (BIOES by default)
for training and back to the file's scheme for output. The best checkpoint is scored
by conlleval's span F1 on the validation file.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import rnnkit
from rnnkit.common import config as cfg
from rnnkit.common.io import atomic_write_text
from rnnkit.data.padded import batches, pad
from rnnkit.data.tokenizers import Tokenizer, tokenizer_from_dict, train_tokenizer
from rnnkit.tasks.tag.config import TagDataConfig, TagSettings, defaults
from rnnkit.tasks.tag.conll import Sentence, format_conll, read_conll
from rnnkit.tasks.tag.metrics import SpanScores, span_scores
from rnnkit.tasks.tag.model import Tagger
from rnnkit.tasks.tag.schemes import allowed_transitions, convert, spans
from rnnkit.train import checkpoint as ckpt
from rnnkit.train import distributed, pretrained
from rnnkit.train.trainer import FitResult, StepResult, Trainer

WORDS_FILE, CHARS_FILE, TAGS_FILE = "words.json", "chars.json", "tags.json"
_DIGITS = re.compile(r"\d")


def configure(
    file: str | Path | None = None, overrides: tuple[str, ...] = (), **sections: Any
) -> TagSettings:
    return cfg.merge(cfg.resolve(defaults(), file, overrides), sections, "configure()")


def _word_key(word: str, data: TagDataConfig) -> str:
    word = word.lower() if data.lowercase else word
    return _DIGITS.sub("0", word) if data.zero_digits else word


class TagVocabulary:
    """A tagger's vocabularies (words, characters, tags) and how a tokenized sentence
    becomes its input tensors (word ids, character ids per word)."""

    def __init__(self, words: Tokenizer, chars: Tokenizer, tags: list[str], data: TagDataConfig):
        self.words, self.chars, self.tags, self.data = words, chars, tags, data
        self.tag_index = {t: i for i, t in enumerate(tags)}

    def word_ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.words.encode(_word_key(w, self.data))[0] for w in tokens]

    def batch(self, sentences: Sequence[Sequence[str]], word_ids: list[list[int]] | None = None):
        """-> (words [B, T], chars [B, T, W], lengths [B])."""
        ids, lengths = pad(word_ids or [self.word_ids(s) for s in sentences])
        W = min(self.data.max_word_length, max(len(w) for s in sentences for w in s))
        chars = torch.zeros(*ids.shape, W, dtype=torch.int64)
        for b, sentence in enumerate(sentences):
            for t, word in enumerate(sentence):
                codes = self.chars.encode(word[:W])
                chars[b, t, : len(codes)] = torch.tensor(codes)
        return ids, chars, lengths


class TagTask:
    unit = "tok"  # what StepResult.count counts

    def __init__(
        self, vocab: TagVocabulary, train: list[Sentence], valid: list[Sentence], seed: int
    ) -> None:
        e = vocab
        self.vocab, self.seed = e, seed
        self.train = train
        self.valid = valid
        self.train_words = [e.word_ids(s.tokens) for s in train]
        self.train_tags = [
            [e.tag_index[t] for t in convert(s.tags, e.data.train_scheme)] for s in train
        ]
        counts = Counter(w for ids in self.train_words for w in ids)
        self.singletons = {w for w, n in counts.items() if n == 1}

    def batches_per_epoch(self, epoch: int) -> int:
        return math.ceil(len(self.train) / self.vocab.data.batch_size)

    def batches(self, epoch: int, start: int) -> Iterator[Any]:
        size, p = self.vocab.data.batch_size, self.vocab.data.singleton_unk
        generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        order = list(batches(len(self.train), size, self.seed, epoch))
        draws = [
            torch.rand(sum(len(self.train_words[r]) for r in rows), generator=generator)
            for rows in order
        ]  # drawn for every batch: resume-exact
        for rows, draw in zip(order[start:], draws[start:], strict=True):
            words, k = [], 0
            for r in rows:
                ids = list(self.train_words[r])
                for t, w in enumerate(ids):
                    if w in self.singletons and draw[k] < p:
                        ids[t] = self.vocab.words.unk_id
                    k += 1
                words.append(ids)
            # under torchrun this process's rows of the batch (drawn above as one process)
            mine = distributed.shard(len(rows))
            rows, words = rows[mine], words[mine]
            if not rows:
                yield None
                continue
            tokens = [self.train[r].tokens for r in rows]
            ids, chars, lengths = self.vocab.batch(tokens, words)
            tags, _ = pad([self.train_tags[r] for r in rows])
            yield ids, chars, lengths, tags

    def train_step(self, model: torch.nn.Module, batch: Any, carry: Any) -> StepResult:
        device = next(model.parameters()).device
        ids, chars, lengths, tags = (x.to(device) for x in batch)
        assert isinstance(model, Tagger)
        # the loss is a mean per sentence, the count in tokens
        loss = model.loss(ids, chars, lengths, tags)
        return StepResult(loss, int(lengths.sum()), weight=len(lengths))

    score_name = "F1"

    def evaluate(self, model: torch.nn.Module) -> tuple[float, float]:
        """(mean loss per validation sentence, span F1 in percent, conlleval's), from one
        pass of the network: the loss and the decoding share each batch's tag scores."""
        assert isinstance(model, Tagger)
        device = next(model.parameters()).device
        e = self.vocab
        total, predicted = 0.0, []
        for rows in batches(len(self.valid), 64, 0, 0):
            sentences = [self.valid[r] for r in rows]
            ids, chars, lengths = (x.to(device) for x in e.batch([s.tokens for s in sentences]))
            gold = [
                [e.tag_index.get(t, 0) for t in convert(s.tags, e.data.train_scheme)]
                for s in sentences
            ]
            tags, _ = pad(gold)
            scores = model.emissions(ids, chars, lengths)  # [B, T, K]
            total += float(model.loss_of(scores, lengths, tags.to(device))) * len(rows)
            predicted += [
                convert([e.tags[i] for i in p], e.data.scheme)
                for p in model.decode_of(scores, lengths)
            ]
        f1 = span_scores([s.tags for s in self.valid], predicted).overall.f1
        return total / len(self.valid), 100 * f1

    def describe(self, loss: float) -> dict[str, float]:
        return {}


@torch.no_grad()
def tag_sentences(
    model: Tagger, vocab: TagVocabulary, sentences: Sequence[Sequence[str]], batch_size: int = 64
) -> list[list[str]]:
    """Predicted tags in the files' scheme for each tokenized sentence."""
    device = next(model.parameters()).device
    out: list[list[str]] = []
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start : start + batch_size]
        ids, chars, lengths = vocab.batch(chunk)
        paths = model.decode(ids.to(device), chars.to(device), lengths.to(device))
        out += [convert([vocab.tags[i] for i in p], vocab.data.scheme) for p in paths]
    return out


@dataclass
class TagRun:
    out_dir: Path
    result: FitResult
    scores: SpanScores


def train(sections: TagSettings | None = None, log: Callable[[str], None] = print) -> TagRun:
    """Train a tagger; score its best checkpoint (span F1) on the validation file."""
    sections = sections or defaults()
    with (
        distributed.session(sections.trainer.device, sections.trainer.threads),
        distributed.claim(sections.trainer.out) as (out_dir, _),
    ):
        return _train(sections, out_dir, distributed.main_only(log))


def _train(sections: TagSettings, out_dir: Path, log: Callable[[str], None]) -> TagRun:
    """``train`` in the claimed and locked run folder ``out_dir``."""
    model_c = sections.model
    data = sections.data
    trainer_c = sections.trainer
    if data.train is None:
        raise ValueError("data.train is required: a CoNLL file (--data.train FILE)")
    torch.manual_seed(trainer_c.seed)
    read: dict[str, Any] = {
        "token_column": data.token_column,
        "tag_column": data.tag_column,
        "scheme": data.scheme,
        "encoding": data.encoding,
    }
    train_s = read_conll(data.train, **read)
    if data.valid is not None:
        valid_s = read_conll(data.valid, **read)
    else:
        cut = max(1, len(train_s) // 10)
        train_s, valid_s = train_s[:-cut], train_s[-cut:]
    words = train_tokenizer(
        "word", [" ".join(_word_key(w, data) for w in s.tokens) + "\n" for s in train_s]
    )
    chars = train_tokenizer("char", [" ".join(s.tokens) for s in train_s])
    tag_names = sorted({t for s in train_s for t in convert(s.tags, data.train_scheme)} | {"O"})
    vocab = TagVocabulary(words, chars, tag_names, data)
    constraints = allowed_transitions(tag_names, data.train_scheme)
    model = Tagger(model_c, words.vocab_size, chars.vocab_size, len(tag_names), constraints)
    task = TagTask(vocab, train_s, valid_s, trainer_c.seed)
    meta = {"task": "tag", "rnnkit_version": rnnkit.__version__}
    extra = {
        ckpt.CONFIG_FILE: cfg.to_dict(sections) | {"meta": meta},
        WORDS_FILE: words.to_dict(),
        CHARS_FILE: chars.to_dict(),
        TAGS_FILE: {"tags": tag_names},
    }
    log(
        f"training a {model_c.cell} tagger ({model_c.output}) on {len(train_s):,} sentences "
        f"({len(valid_s):,} validation), {len(tag_names)} tags; run in {out_dir}"
    )
    result = Trainer(model, task, trainer_c, sections.optim, out_dir, extra, log).fit()

    def score_best() -> list[list[str]]:  # rank 0's, on every rank
        best, best_vocab = load(out_dir)
        predicted = tag_sentences(best, best_vocab, [s.tokens for s in valid_s])
        scores = span_scores([s.tags for s in valid_s], predicted)
        atomic_write_text(out_dir / "report.txt", scores.report() + "\n")
        atomic_write_text(out_dir / "valid.conll", format_conll(valid_s, predicted))
        return predicted

    predicted = distributed.from_main(score_best)
    return TagRun(out_dir, result, span_scores([s.tags for s in valid_s], predicted))


def load(path: str | Path, which: str = "best") -> tuple[Tagger, TagVocabulary]:
    return ckpt.load_run(path, which, _load)


def _tag_names(saved: dict[str, Any]) -> list[str]:
    names = saved["tags"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("'tags' is not a list of tag names")
    return names


def _load(checkpoint: Path) -> tuple[Tagger, TagVocabulary]:
    record = pretrained.read(checkpoint, "tag", (WORDS_FILE, CHARS_FILE, TAGS_FILE))
    _, sections = ckpt.open_checkpoint(checkpoint, "tag", defaults())
    words = ckpt.read_part(checkpoint, WORDS_FILE, tokenizer_from_dict)
    chars = ckpt.read_part(checkpoint, CHARS_FILE, tokenizer_from_dict)
    tag_names = ckpt.read_part(checkpoint, TAGS_FILE, _tag_names)
    data = sections.data
    constraints = allowed_transitions(tag_names, data.train_scheme)
    model = ckpt.build_model(
        checkpoint,
        lambda: Tagger(
            sections.model, words.vocab_size, chars.vocab_size, len(tag_names), constraints
        ),
        sections.model,
    )
    assert isinstance(model, Tagger)
    model.pretrained = record
    return model.eval(), TagVocabulary(words, chars, tag_names, data)


def _compose(model: Tagger, vocabulary: TagVocabulary | None = None) -> pretrained.Pretrained:
    """``Tagger.save_pretrained``'s part: the vocabularies of words, characters and tags,
    with how words are looked up (its data section: lowercase, zero_digits, the schemes)."""
    v = vocabulary
    return pretrained.compose(
        model,
        "tag",
        defaults(),
        files={
            WORDS_FILE: ("vocabulary", v and v.words.to_dict()),
            CHARS_FILE: ("vocabulary", v and v.chars.to_dict()),
            TAGS_FILE: ("vocabulary", v and {"tags": list(v.tags)}),
        },
        sections={"data": v and v.data},
    )


PRETRAINED = pretrained.Adapter("tag", lambda checkpoint: _load(checkpoint)[0], _compose)


def predict(path: str | Path, sentences: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """For each tokenized sentence: {"tokens", "tags", "spans": [{type, start, end, text}]}."""
    model, vocab = load(path)
    tags = tag_sentences(model, vocab, sentences)
    return [
        {
            "tokens": list(s),
            "tags": t,
            "spans": [
                {"type": k, "start": a, "end": b, "text": " ".join(s[a:b])} for k, a, b in spans(t)
            ],
        }
        for s, t in zip(sentences, tags, strict=True)
    ]


def evaluate_file(run: str | Path, path: str | Path, encoding: str | None = None) -> dict[str, Any]:
    """Score a trained tagger on a CoNLL file (the columns and scheme of its training
    files, and their encoding unless ``encoding``): conlleval's span precision, recall and
    F1, token accuracy, and F1 by span type, as fractions."""
    model, vocab = load(run)
    data = vocab.data
    sentences = read_conll(
        path,
        token_column=data.token_column,
        tag_column=data.tag_column,
        scheme=data.scheme,
        encoding=encoding or data.encoding,
    )
    if not sentences:
        raise ValueError(f"{path}: no sentences to score")
    predicted = tag_sentences(model, vocab, [s.tokens for s in sentences])
    scores = span_scores([s.tags for s in sentences], predicted)
    o = scores.overall
    return {
        "sentences": len(sentences),
        "tokens": sum(len(s.tokens) for s in sentences),
        "precision": o.precision,
        "recall": o.recall,
        "f1": o.f1,
        "token_accuracy": scores.token_accuracy,
        "f1_by_type": {kind: s.f1 for kind, s in sorted(scores.by_type.items())},
    }


def format_tagged(predictions: list[dict[str, Any]], as_json: bool) -> str:
    """CoNLL columns (token tag, blank line between sentences) or JSON lines of spans."""
    if as_json:
        return "\n".join(json.dumps(p) for p in predictions)
    return "\n\n".join(
        "\n".join(f"{w} {t}" for w, t in zip(p["tokens"], p["tags"], strict=True))
        for p in predictions
    )
