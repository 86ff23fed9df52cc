"""Sequence to sequence (translation-shaped tasks) as a trainer task, and its Python API.

    from rnnkit.tasks.seq2seq import api as seq2seq
    run = seq2seq.train(seq2seq.configure(data={"dates": 50_000}))   # the dates task
    run = seq2seq.train(seq2seq.configure(data={"train": "train.tsv", "valid": "dev.tsv"}))
    results = seq2seq.translate(run.out_dir, ["5 janvier 2023"], beam=5)

Data: TSV (source<TAB>target) or two aligned files (``data.train`` + ``data.train_target``),
or the generated dates task (``rnnkit.tasks.seq2seq.dates``: ``data.dates`` training pairs, 1,000
validation and a held-out test set of 10,000, disjoint by the written string). Source and
target get their own tokenizers (char by default; word or BPE), learned on the training
pairs; every sequence ends in <eos>. The loss is the mean cross-entropy per target token
(teacher forcing, optionally scheduled sampling). After training, the best checkpoint
translates the validation (and test) sources: exact match, BLEU and chrF (sacrebleu),
written to report.json / report.txt, with an attention heat map (attention.png).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import rnnkit
from rnnkit.common import config as cfg
from rnnkit.common.io import atomic_savefig, atomic_write_text
from rnnkit.data.padded import batches, pad
from rnnkit.data.text import DataError
from rnnkit.data.tokenizers import Tokenizer, tokenizer_from_dict, train_tokenizer
from rnnkit.decoding.beam import Hypothesis, decode
from rnnkit.tasks.seq2seq.config import (
    DecodeConfig,
    Seq2SeqDataConfig,
    Seq2SeqSettings,
    defaults,
)
from rnnkit.tasks.seq2seq.model import Seq2Seq
from rnnkit.tasks.seq2seq.parallel import Pair, read_parallel
from rnnkit.train import checkpoint as ckpt
from rnnkit.train import distributed, pretrained
from rnnkit.train.trainer import FitResult, StepResult, Trainer

SOURCE_FILE, TARGET_FILE = "source_tokenizer.json", "target_tokenizer.json"


def configure(
    file: str | Path | None = None, overrides: tuple[str, ...] = (), **sections: Any
) -> Seq2SeqSettings:
    return cfg.merge(cfg.resolve(defaults(), file, overrides), sections, "configure()")


def options_help() -> str:
    return cfg.help_table(defaults())


class PairTokenizers:
    """A model's source and target tokenizers: a text -> its ids, ending in <eos>."""

    def __init__(self, source: Tokenizer, target: Tokenizer) -> None:
        self.source, self.target = source, target

    def source_ids(self, text: str) -> list[int]:
        return [*self.source.encode(text), self.source.eos_id]

    def target_ids(self, text: str) -> list[int]:
        return [*self.target.encode(text), self.target.eos_id]


class Seq2SeqTask:
    def __init__(
        self,
        tokenizers: PairTokenizers,
        train: list[Pair],
        valid: list[Pair],
        batch_size: int,
        seed: int,
    ) -> None:
        self.train_src = [tokenizers.source_ids(p.source) for p in train]
        self.train_tgt = [tokenizers.target_ids(p.target) for p in train]
        self.valid_src = [tokenizers.source_ids(p.source) for p in valid]
        self.valid_tgt = [tokenizers.target_ids(p.target) for p in valid]
        self.batch_size, self.seed = batch_size, seed

    def batches_per_epoch(self, epoch: int) -> int:
        return math.ceil(len(self.train_src) / self.batch_size)

    def batches(self, epoch: int, start: int) -> Iterator[Any]:
        for batch in batches(len(self.train_src), self.batch_size, self.seed, epoch, start):
            rows = distributed.share(batch)  # under torchrun, this process's rows
            if not rows:
                yield None
                continue
            source, lengths = pad([self.train_src[r] for r in rows])
            target, target_lengths = pad([self.train_tgt[r] for r in rows])
            yield source, lengths, target, target_lengths

    def train_step(self, model: torch.nn.Module, batch: Any, carry: Any) -> StepResult:
        assert isinstance(model, Seq2Seq)
        device = next(model.parameters()).device
        loss, count = model.loss(*(x.to(device) for x in batch))
        return StepResult(loss, count)

    def evaluate(self, model: torch.nn.Module) -> float:
        """Mean cross-entropy per validation target token (teacher forced)."""
        assert isinstance(model, Seq2Seq)
        device = next(model.parameters()).device
        total, count = 0.0, 0
        for rows in batches(len(self.valid_src), 256, 0, 0):
            source, lengths = pad([self.valid_src[r] for r in rows])
            target, target_lengths = pad([self.valid_tgt[r] for r in rows])
            loss, n = model.loss(
                source.to(device), lengths.to(device), target.to(device), target_lengths.to(device)
            )
            total, count = total + float(loss) * n, count + n
        return total / count

    def describe(self, loss: float) -> dict[str, float]:
        return {"ppl": math.exp(min(loss, 50.0))}


class Translator:
    """A trained model with its tokenizers and decoding settings: texts -> translations."""

    def __init__(self, model: Seq2Seq, tokenizers: PairTokenizers, decode_c: DecodeConfig) -> None:
        self.model, self.tokenizers, self.decode = model.eval(), tokenizers, decode_c

    @torch.no_grad()
    def hypotheses(
        self, texts: Sequence[str], beam: int | None = None, batch_size: int = 256
    ) -> list[Hypothesis]:
        """The best hypothesis per text, decoded in batches of ``batch_size``."""
        beam = beam or self.decode.beam
        max_length = self.decode.max_length or 50
        device = next(self.model.parameters()).device
        out: list[Hypothesis] = []
        for start in range(0, len(texts), batch_size):
            source, lengths = pad(
                [self.tokenizers.source_ids(t) for t in texts[start : start + batch_size]]
            )
            out += decode(
                self.model,
                source.to(device),
                lengths.to(device),
                beam,
                max_length,
                self.decode.length_penalty,
            )
        return out

    def translate(self, texts: Sequence[str], beam: int | None = None) -> list[dict[str, Any]]:
        """For each text: {"source", "translation", "score" (log p), "finished"}."""
        return [
            {
                "source": t,
                "translation": self.tokenizers.target.decode(h.tokens),
                "score": h.score,
                "finished": h.finished,
            }
            for t, h in zip(texts, self.hypotheses(texts, beam), strict=True)
        ]


def scores(
    hypotheses: Sequence[str], references: Sequence[str], bleu_tokenize: str = "13a"
) -> dict[str, float]:
    """Exact match (%), corpus BLEU and chrF (sacrebleu, 0-100). BLEU counts word n-grams
    after sacrebleu's ``bleu_tokenize`` ("13a", its default; "char" for character tasks,
    whose one-word outputs would leave word 4-grams empty)."""
    import sacrebleu

    exact = sum(h == r for h, r in zip(hypotheses, references, strict=True))
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=bleu_tokenize)
    return {
        "exact_match": 100.0 * exact / max(len(references), 1),
        "bleu": bleu.score,
        "chrf": sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score,
        "pairs": float(len(references)),
    }


def plot_attention(translator: Translator, texts: Sequence[str], path: str | Path) -> Path:
    """A heat map of the attention weights (rows: output tokens, columns: source tokens)
    for each text, side by side in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hyps = translator.hypotheses(texts, beam=1)
    fig, axes = plt.subplots(1, len(texts), figsize=(4.2 * len(texts), 4.2), squeeze=False)
    src_tok, tgt_tok = translator.tokenizers.source, translator.tokenizers.target
    for ax, text, h in zip(axes[0], texts, hyps, strict=True):
        ids = translator.tokenizers.source_ids(text)
        weights = h.attention[:, : len(ids)].numpy()  # [steps, S]
        ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
        ax.set_xticks(
            range(len(ids)),
            [src_tok.token_text(i) or "<eos>" for i in ids],
            fontsize=7,
            rotation=90,
        )
        rows = [tgt_tok.token_text(i) for i in h.tokens] + (["<eos>"] if h.finished else [])
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(f"{text!r}\n-> {tgt_tok.decode(h.tokens)!r}", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class Seq2SeqRun:
    out_dir: Path
    result: FitResult
    report: dict[str, dict[str, float]]

    def text(self) -> str:
        lines = []
        for split, s in self.report.items():
            lines.append(
                f"{split}: exact match {s['exact_match']:.2f}% BLEU {s['bleu']:.2f} "
                f"chrF {s['chrf']:.2f} ({int(s['pairs']):,} pairs, beam "
                f"{int(s['beam'])}, {s['seconds']:.1f} s)"
            )
        return "\n".join(lines)


def read_data(data: Seq2SeqDataConfig) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """(train, valid, test) pairs from the files or the dates generator."""
    if data.dates:
        if data.train is not None:
            raise ValueError("give either data.dates (the generated task) or data.train, not both")
        from rnnkit.tasks.seq2seq import dates

        splits = dates.splits(data.dates, data.dates_valid, data.dates_test, data.dates_seed)
        train, valid, test = ([Pair(s, t) for s, t in split] for split in splits)
        return train, valid, test
    if data.train is None:
        raise ValueError(
            "data.train is required (--data.train FILE: source<TAB>target lines), "
            "or --data.dates N for the generated dates task"
        )
    train = read_parallel(data.train, data.train_target, data.encoding)
    if data.valid is not None:
        valid = read_parallel(data.valid, data.valid_target, data.encoding)
    else:
        cut = max(1, len(train) // 10)
        if len(train) - cut < 1:
            raise DataError(f"{data.train} has {len(train)} pair(s): too few to hold out 10%")
        train, valid = train[:-cut], train[-cut:]
    test = read_parallel(data.test, data.test_target, data.encoding) if data.test else []
    return train, valid, test


def evaluate_pairs(
    translator: Translator, pairs: Sequence[Pair], beam: int | None = None
) -> dict[str, float]:
    started = time.perf_counter()
    outputs = [r["translation"] for r in translator.translate([p.source for p in pairs], beam)]
    kind = translator.tokenizers.target.kind
    figures = scores(outputs, [p.target for p in pairs], "char" if kind == "char" else "13a")
    return figures | {
        "beam": float(beam or translator.decode.beam),
        "seconds": time.perf_counter() - started,
    }


def train(
    sections: Seq2SeqSettings | None = None, log: Callable[[str], None] = print
) -> Seq2SeqRun:
    """Train an encoder-decoder; score its best checkpoint on the validation (and test) pairs."""
    sections = sections or defaults()
    with (
        distributed.session(sections.trainer.device, sections.trainer.threads),
        distributed.claim(sections.trainer.out) as (out_dir, _),
    ):
        return _train(sections, out_dir, distributed.main_only(log))


def _train(sections: Seq2SeqSettings, out_dir: Path, log: Callable[[str], None]) -> Seq2SeqRun:
    """``train`` in the claimed and locked run folder ``out_dir``."""
    model_c = sections.model
    data = sections.data
    trainer_c = sections.trainer
    torch.manual_seed(trainer_c.seed)
    train_p, valid_p, test_p = read_data(data)
    source = train_tokenizer(
        data.tokenizer, [p.source for p in train_p], vocab_size=data.source_vocab_size
    )
    target = train_tokenizer(
        data.tokenizer, [p.target for p in train_p], vocab_size=data.target_vocab_size
    )
    tokenizers = PairTokenizers(source, target)
    task = Seq2SeqTask(tokenizers, train_p, valid_p, data.batch_size, trainer_c.seed)
    decode_c = sections.decode
    if decode_c.max_length is None:
        longest = max(len(t) for t in task.train_tgt)
        decode_c = dataclasses.replace(decode_c, max_length=longest + 10)
        sections = dataclasses.replace(sections, decode=decode_c)
    model = Seq2Seq(model_c, source.vocab_size, target.vocab_size)
    meta = {"task": "seq2seq", "rnnkit_version": rnnkit.__version__}
    extra = {
        ckpt.CONFIG_FILE: cfg.to_dict(sections) | {"meta": meta},
        SOURCE_FILE: source.to_dict(),
        TARGET_FILE: target.to_dict(),
    }
    log(
        f"training a {model_c.cell} encoder-decoder ({model_c.attention} attention, "
        f"{model.describe()['parameters']:,} parameters) on {len(train_p):,} pairs "
        f"({len(valid_p):,} validation, {len(test_p):,} test); vocabularies {source.vocab_size}"
        f" / {target.vocab_size} {data.tokenizer} tokens; run in {out_dir}"
    )
    result = Trainer(model, task, trainer_c, sections.optim, out_dir, extra, log).fit()

    def score_best() -> dict[str, Any]:  # rank 0's, on every rank
        translator = load(out_dir)
        report = {"valid": evaluate_pairs(translator, valid_p)}
        if test_p:
            report["test"] = evaluate_pairs(translator, test_p)
        run = Seq2SeqRun(out_dir, result, report)
        atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(out_dir / "report.txt", run.text() + "\n")
        shown = (test_p or valid_p)[:4]
        plot_attention(translator, [p.source for p in shown], out_dir / "attention.png")
        return report

    return Seq2SeqRun(out_dir, result, distributed.from_main(score_best))


def load(path: str | Path, which: str = "best") -> Translator:
    return ckpt.load_run(path, which, _load)


def _load(checkpoint: Path) -> Translator:
    record = pretrained.read(checkpoint, "seq2seq", (SOURCE_FILE, TARGET_FILE))
    _, sections = ckpt.open_checkpoint(checkpoint, "seq2seq", defaults())
    source = ckpt.read_part(checkpoint, SOURCE_FILE, tokenizer_from_dict)
    target = ckpt.read_part(checkpoint, TARGET_FILE, tokenizer_from_dict)
    model = ckpt.build_model(
        checkpoint,
        lambda: Seq2Seq(sections.model, source.vocab_size, target.vocab_size),
        sections.model,
    )
    assert isinstance(model, Seq2Seq)
    model.pretrained = record
    return Translator(model, PairTokenizers(source, target), sections.decode)


def _compose(
    model: Seq2Seq, tokenizers: PairTokenizers | None = None, decode: DecodeConfig | None = None
) -> pretrained.Pretrained:
    """``Seq2Seq.save_pretrained``'s parts: the source and target tokenizers, and the
    decoding settings ``translate`` starts from."""
    t = tokenizers
    return pretrained.compose(
        model,
        "seq2seq",
        defaults(),
        files={
            SOURCE_FILE: ("tokenizers", t and t.source.to_dict()),
            TARGET_FILE: ("tokenizers", t and t.target.to_dict()),
        },
        sections={"decode": decode, "data": t and {"tokenizer": t.source.kind}},
    )


PRETRAINED = pretrained.Adapter("seq2seq", lambda checkpoint: _load(checkpoint).model, _compose)


def translate(
    path: str | Path, texts: Sequence[str], beam: int | None = None
) -> list[dict[str, Any]]:
    """Translate ``texts`` with the best checkpoint of a run; see ``Translator.translate``."""
    return load(path).translate(texts, beam)


def evaluate_file(
    run: str | Path,
    path: str | Path,
    encoding: str | None = None,
    target: str | Path | None = None,
    beam: int | None = None,
) -> dict[str, Any]:
    """Translate the sources of a parallel file (source<TAB>target lines, or with
    ``target`` two aligned files) and score the translations against its targets: exact
    match (%), corpus BLEU and chrF (0-100), with the run's beam unless ``beam``. The
    files' encoding is the run's data.encoding unless ``encoding``."""
    translator = load(run)
    _, _, sections = ckpt.open_run(run, "seq2seq", defaults())
    pairs = read_parallel(path, target, encoding or sections.data.encoding)
    if not pairs:
        raise ValueError(f"{path}: no pairs to score")
    return {"pairs": len(pairs)} | evaluate_pairs(translator, pairs, beam)
