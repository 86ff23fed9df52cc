"""Sequence classification as a trainer task, and its Python API.

    from rnnkit.tasks.classify import api as classify
    run = classify.train(classify.configure(data={"train": "train.txt", "valid": "dev.txt"}))
    labels_and_probs = classify.predict(run.out_dir, ["a gripping , funny film ."])

Tokens are whitespace-separated words (the SST files are pre-tokenized), or characters or
BPE subwords learned from the training text (``data.tokenizer``); the loss is the
mean cross-entropy per sentence. After training, the best checkpoint is scored on the
validation file: accuracy, per-class and macro F1, and a confusion matrix (text + PNG).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import rnnkit
from rnnkit.common import config as cfg
from rnnkit.data.padded import batches, pad
from rnnkit.data.tokenizers import PAD_ID, Tokenizer, tokenizer_from_dict, train_tokenizer
from rnnkit.tasks.classify.config import (
    ClassifyDataConfig,
    ClassifySettings,
    defaults,
)
from rnnkit.tasks.classify.labelled import Example, LabelSet, read_labelled
from rnnkit.tasks.classify.metrics import ClassificationReport, classification_report
from rnnkit.tasks.classify.model import Classifier
from rnnkit.tasks.classify.pretrained import init_from_language_model
from rnnkit.tasks.classify.vectors import load_vectors
from rnnkit.train import checkpoint as ckpt
from rnnkit.train import distributed, pretrained
from rnnkit.train.trainer import FitResult, StepResult, Trainer

TOKENIZER_FILE = "tokenizer.json"
LABELS_FILE = "labels.json"


def configure(
    file: str | Path | None = None, overrides: tuple[str, ...] = (), **sections: Any
) -> ClassifySettings:
    return cfg.merge(cfg.resolve(defaults(), file, overrides), sections, "configure()")


def _text(example_text: str, lowercase: bool) -> str:
    return " ".join((example_text.lower() if lowercase else example_text).split())


class ClassifyTask:
    unit = "sentences"  # what StepResult.count counts

    def __init__(
        self,
        tokenizer: Tokenizer,
        labels: LabelSet,
        train: list[Example],
        valid: list[Example],
        data: ClassifyDataConfig,
        seed: int,
    ) -> None:
        def encode(examples: list[Example]) -> tuple[list[list[int]], list[int]]:
            ids = [
                tokenizer.encode(_text(e.text, data.lowercase)) or [tokenizer.unk_id]
                for e in examples
            ]
            return ids, [labels.id(e.label) for e in examples]

        self.train_ids, self.train_labels = encode(train)
        self.valid_ids, self.valid_labels = encode(valid)
        self.batch_size, self.seed = data.batch_size, seed
        if not 0 <= data.word_dropout < 1:
            raise ValueError(f"data.word_dropout must be in [0, 1), got {data.word_dropout}")
        self.word_dropout, self.unk_id = data.word_dropout, tokenizer.unk_id

    def batches_per_epoch(self, epoch: int) -> int:
        return math.ceil(len(self.train_ids) / self.batch_size)

    def batches(self, epoch: int, start: int) -> Iterator[Any]:
        # The epoch's word-dropout draws depend on (seed, epoch) only, so resuming at any
        # batch gives the same batches as a run that never stopped. Under torchrun each
        # process takes its rows of the batch one process would draw (None: no rows).
        generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        for i, rows in enumerate(batches(len(self.train_ids), self.batch_size, self.seed, epoch)):
            ids, lengths = pad([self.train_ids[r] for r in rows])  # [B, T]
            if self.word_dropout:
                drop = torch.rand(ids.shape, generator=generator) < self.word_dropout
                ids = ids.masked_fill(drop & (ids != PAD_ID), self.unk_id)
            if i >= start:
                labels = torch.tensor([self.train_labels[r] for r in rows])
                yield distributed.share_rows(ids, lengths, labels)

    def train_step(self, model: torch.nn.Module, batch: Any, carry: Any) -> StepResult:
        ids, lengths, labels = batch
        device = next(model.parameters()).device
        logits = model(ids.to(device), lengths.to(device))
        return StepResult(F.cross_entropy(logits.float(), labels.to(device)), len(labels))

    def predict_valid(self, model: torch.nn.Module) -> tuple[float, list[int]]:
        """(mean cross-entropy, predicted label ids) on the validation set."""
        device = next(model.parameters()).device
        total, predicted = 0.0, []
        for rows in batches(len(self.valid_ids), 128, 0, 0):
            ids, lengths = pad([self.valid_ids[r] for r in rows])
            logits = model(ids.to(device), lengths.to(device))
            gold = torch.tensor([self.valid_labels[r] for r in rows], device=device)
            total += float(F.cross_entropy(logits.float(), gold, reduction="sum"))
            predicted += logits.argmax(1).tolist()
        return total / len(self.valid_ids), predicted

    score_name = "accuracy"

    def evaluate(self, model: torch.nn.Module) -> tuple[float, float]:
        """(mean validation cross-entropy, accuracy in percent) from one pass."""
        loss, predicted = self.predict_valid(model)
        right = sum(p == g for p, g in zip(predicted, self.valid_labels, strict=True))
        return loss, 100 * right / len(self.valid_labels)

    def describe(self, loss: float) -> dict[str, float]:
        return {}


@dataclass
class ClassifyRun:
    out_dir: Path
    result: FitResult
    report: ClassificationReport


def _split(data: ClassifyDataConfig) -> tuple[list[Example], list[Example]]:
    if data.train is None:
        raise ValueError("data.train is required: a labelled file (--data.train FILE)")
    read: dict[str, Any] = {
        "format": data.format,
        "text_column": data.text_column,
        "label_column": data.label_column,
        "encoding": data.encoding,
    }
    train = read_labelled(data.train, **read)
    if data.valid is not None:
        return train, read_labelled(data.valid, **read)
    cut = max(1, len(train) // 10)
    if len(train) - cut < 1:
        raise ValueError(f"{data.train} has {len(train)} example(s): too few to hold out 10%")
    return train[:-cut], train[-cut:]


def train(
    sections: ClassifySettings | None = None, log: Callable[[str], None] = print
) -> ClassifyRun:
    """Train a classifier; score its best checkpoint on the validation set."""
    sections = sections or defaults()
    with (
        distributed.session(sections.trainer.device, sections.trainer.threads),
        distributed.claim(sections.trainer.out) as (out_dir, _),
    ):
        return _train(sections, out_dir, distributed.main_only(log))


def _train(sections: ClassifySettings, out_dir: Path, log: Callable[[str], None]) -> ClassifyRun:
    """``train`` in the claimed and locked run folder ``out_dir``."""
    model_c = sections.model
    data_c = sections.data
    trainer_c = sections.trainer
    torch.manual_seed(trainer_c.seed)
    train_examples, valid_examples = _split(data_c)
    texts = [_text(e.text, data_c.lowercase) + "\n" for e in train_examples]
    if data_c.tokenizer != "word" and (
        data_c.vectors or data_c.pretrained_lm or data_c.pretrained_lm_reverse
    ):
        raise ValueError(
            f"pretrained vectors and language models match words, so they need "
            f"data.tokenizer 'word', got {data_c.tokenizer!r}"
        )
    tokenizer = train_tokenizer(
        data_c.tokenizer, texts, vocab_size=data_c.vocab_size, min_count=data_c.min_count
    )
    labels = LabelSet.from_labels(e.label for e in train_examples)
    model = Classifier(model_c, tokenizer.vocab_size, len(labels.names))
    if data_c.vectors:
        vocab = {tokenizer.token_text(i): i for i in range(tokenizer.vocab_size)}
        found = load_vectors(data_c.vectors, vocab, model.embedding.weight)
        log(f"pretrained vectors for {found:,} of {tokenizer.vocab_size:,} words")
    for path, reverse in ((data_c.pretrained_lm, False), (data_c.pretrained_lm_reverse, True)):
        if path is not None:
            # The embeddings come from the forward model when both are given: the
            # backward one's are a second, different, view of the same words.
            embedding = None if reverse and data_c.pretrained_lm else model.embedding
            transfer = init_from_language_model(
                embedding, model.rnn, tokenizer, path, reverse=reverse
            )
            log(transfer.describe(path, "backward" if reverse else "forward"))
    task = ClassifyTask(tokenizer, labels, train_examples, valid_examples, data_c, trainer_c.seed)
    meta = {"task": "classify", "rnnkit_version": rnnkit.__version__}
    extra = {
        ckpt.CONFIG_FILE: cfg.to_dict(sections) | {"meta": meta},
        TOKENIZER_FILE: tokenizer.to_dict(),
        LABELS_FILE: labels.to_dict(),
    }
    log(
        f"training a {model_c.cell} classifier on {len(train_examples):,} sentences "
        f"({len(valid_examples):,} validation), {len(labels.names)} labels; run in {out_dir}"
    )
    result = Trainer(model, task, trainer_c, sections.optim, out_dir, extra, log).fit()

    def score_best() -> list[list[int]]:
        best, _, _ = load(out_dir)
        with torch.no_grad():
            _, predicted = task.predict_valid(best)
        report = classification_report(task.valid_labels, predicted, labels.names)
        report.write(out_dir)
        return report.confusion

    report = ClassificationReport(tuple(labels.names), distributed.from_main(score_best))
    return ClassifyRun(out_dir, result, report)


def load(path: str | Path, which: str = "best") -> tuple[Classifier, Tokenizer, LabelSet]:
    return ckpt.load_run(path, which, _load)


def _load(checkpoint: Path) -> tuple[Classifier, Tokenizer, LabelSet]:
    record = pretrained.read(checkpoint, "classify", (TOKENIZER_FILE, LABELS_FILE))
    _, sections = ckpt.open_checkpoint(checkpoint, "classify", defaults())
    tokenizer = ckpt.read_part(checkpoint, TOKENIZER_FILE, tokenizer_from_dict)
    labels = ckpt.read_part(checkpoint, LABELS_FILE, LabelSet.from_dict)
    model = ckpt.build_model(
        checkpoint,
        lambda: Classifier(sections.model, tokenizer.vocab_size, len(labels.names)),
        sections.model,
    )
    assert isinstance(model, Classifier)
    model.lowercase = sections.data.lowercase  # type: ignore[assignment]
    model.pretrained = record
    return model.eval(), tokenizer, labels


def _compose(
    model: Classifier,
    tokenizer: Tokenizer | None = None,
    labels: LabelSet | None = None,
    lowercase: bool | None = None,
) -> pretrained.Pretrained:
    """``Classifier.save_pretrained``'s parts: the tokenizer, the labels, and whether
    texts are lowercased before they are tokenized (data.lowercase)."""
    data: dict[str, Any] = {} if tokenizer is None else {"tokenizer": tokenizer.kind}
    data |= {} if lowercase is None else {"lowercase": lowercase}
    return pretrained.compose(
        model,
        "classify",
        defaults(),
        files={
            TOKENIZER_FILE: ("tokenizer", tokenizer and tokenizer.to_dict()),
            LABELS_FILE: ("labels", labels and labels.to_dict()),
        },
        sections={"data": data},
    )


PRETRAINED = pretrained.Adapter("classify", lambda checkpoint: _load(checkpoint)[0], _compose)


@torch.no_grad()
def predict(path: str | Path, texts: Sequence[str]) -> list[dict[str, Any]]:
    """For each text: {"text", "label", "probabilities": {label: p}}."""
    return _predict(*load(path), texts)


@torch.no_grad()
def _predict(
    model: Classifier, tokenizer: Tokenizer, labels: LabelSet, texts: Sequence[str]
) -> list[dict[str, Any]]:
    lowercase = bool(getattr(model, "lowercase", False))
    out = []
    for start in range(0, len(texts), 128):
        chunk = texts[start : start + 128]
        ids, lengths = pad(
            [tokenizer.encode(_text(t, lowercase)) or [tokenizer.unk_id] for t in chunk]
        )
        probs = torch.softmax(model(ids, lengths), dim=1)
        for text, p in zip(chunk, probs.tolist(), strict=True):
            best = max(range(len(p)), key=p.__getitem__)
            out.append(
                {
                    "text": text,
                    "label": labels.names[best],
                    "probabilities": dict(zip(labels.names, p, strict=True)),
                }
            )
    return out


def evaluate_file(run: str | Path, path: str | Path, encoding: str | None = None) -> dict[str, Any]:
    """Score a trained classifier on a labelled file (read as its training files were:
    data.format, the columns, and data.encoding unless ``encoding``): accuracy, macro F1
    and per-class precision, recall, F1 and support, as fractions."""
    _, _, sections = ckpt.open_run(run, "classify", defaults())
    data = sections.data
    examples = read_labelled(
        path,
        format=data.format,
        text_column=data.text_column,
        label_column=data.label_column,
        encoding=encoding or data.encoding,
    )
    model, tokenizer, labels = load(run)
    gold = [labels.id(e.label) for e in examples]  # an unseen label fails, named
    predictions = _predict(model, tokenizer, labels, [e.text for e in examples])
    predicted = [labels.id(p["label"]) for p in predictions]
    report = classification_report(gold, predicted, labels.names)
    return {
        "examples": len(examples),
        "accuracy": report.accuracy,
        "macro_f1": report.macro_f1,
        "per_class": report.per_class(),
    }


def format_predictions(predictions: list[dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return "\n".join(json.dumps(p) for p in predictions)
    return "\n".join(
        f"{p['label']}\t{p['probabilities'][p['label']]:.3f}\t{p['text']}" for p in predictions
    )
