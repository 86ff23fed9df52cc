"""Language modelling as a trainer task, and the few-line Python API around it.

    from rnnkit.tasks.lm import api as lm
    run = lm.train(lm.configure(text="input.txt", model={"hidden_size": 512}))
    model, tokenizer, sections = lm.load(run.out_dir)

The task reads the text (``data.text``; none: the Python reference documentation that
ships with every Python, ``pydoc_data.topics``), learns a tokenizer, splits off a
validation tail (or reads ``data.valid_text``), and cuts both into B parallel streams of
``bptt``-step windows (``rnnkit.data.LMBatches``). The loss is the mean cross-entropy
per target token in nats; the trainer carries the recurrent state across windows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import rnnkit
from rnnkit.common import config as cfg
from rnnkit.data import cached_ids, encode_ids, id_dtype, iter_text, train_tokenizer
from rnnkit.data.tokenizers import SPECIALS, Tokenizer, tokenizer_from_dict
from rnnkit.decoding.config import SampleConfig
from rnnkit.tasks.lm.batching import LMBatches, split_train_valid
from rnnkit.tasks.lm.config import DEFAULT_CORPUS, DataConfig, LMSettings, defaults
from rnnkit.tasks.lm.model import LanguageModel, bits_per_token, perplexity
from rnnkit.train import checkpoint as ckpt
from rnnkit.train import distributed, pretrained
from rnnkit.train.trainer import FitResult, StepResult, Trainer

TOKENIZER_FILE = "tokenizer.json"
CACHE_DIR = "cache"  # in the run folder: the token ids, memory-mapped (load_corpus)


def configure(
    file: str | Path | None = None, overrides: tuple[str, ...] = (), **sections: Any
) -> LMSettings:
    """Defaults, then a config file, then ``--section.field value`` overrides, then
    keyword sections (``model={"hidden_size": 512}``); ``text=PATH`` sets data.text."""
    resolved = cfg.resolve(defaults(), file, overrides)
    if "text" in sections:
        sections.setdefault("data", {})["text"] = sections.pop("text")
    return cfg.merge(resolved, sections, "configure()")


def default_corpus() -> str:
    """Python's reference documentation (``pydoc_data.topics``), one topic after another
    in sorted order: about 465k characters of English prose and code on every machine."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key].strip("\n") for key in sorted(topics)) + "\n"


def _check_vocabulary(tokenizer: Tokenizer, source: str) -> None:
    real = tokenizer.vocab_size - len(SPECIALS)
    if real < 2:
        only = tokenizer.decode([len(SPECIALS)]) if real == 1 else ""
        raise ValueError(
            f"{source} has a vocabulary of {real} token ({only!r}); a language model "
            "needs at least 2 distinct tokens to predict"
        )


def load_corpus(
    data: DataConfig, tokenizer: Tokenizer | None = None, cache_dir: Path | None = None
) -> tuple[Tokenizer, np.ndarray, np.ndarray]:
    """(tokenizer, train ids [N], valid ids [M]) as 1-D arrays of ``id_dtype(vocab)``; a
    new tokenizer (learned in a first pass over the text) unless one is given.

    With ``cache_dir`` (the run folder's ``cache/``), the ids of ``data.text`` and
    ``data.valid_text`` are encoded into ``train.ids`` and ``valid.ids`` there, or
    reused from them (``rnnkit.data.cached_ids``), and memory-mapped: the corpus is never
    in memory. Without it, or for the default corpus, they are in memory.
    """
    source = data.text or DEFAULT_CORPUS
    if data.text is None:
        text = default_corpus()
        tokenizer = tokenizer or train_tokenizer(
            data.tokenizer, [text], vocab_size=data.vocab_size, min_count=data.min_count
        )
        ids = tokenizer.encode_array(text).astype(id_dtype(tokenizer.vocab_size))
    else:
        if tokenizer is None:
            texts = iter_text(data.text, data.encoding)
            tokenizer = train_tokenizer(
                data.tokenizer, texts, vocab_size=data.vocab_size, min_count=data.min_count
            )
        ids = _encoded(tokenizer, data.text, data.encoding, cache_dir, "train")
    _check_vocabulary(tokenizer, source)
    if data.valid_text is not None:
        valid_ids = _encoded(tokenizer, data.valid_text, data.encoding, cache_dir, "valid")
        return tokenizer, ids, valid_ids
    train, valid = split_train_valid(ids, data.valid_fraction)
    return tokenizer, train, valid


def _encoded(
    tokenizer: Tokenizer, path: str, encoding: str, cache_dir: Path | None, name: str
) -> np.ndarray:
    if cache_dir is None:
        return encode_ids(tokenizer, path, encoding)
    return cached_ids(tokenizer, path, Path(cache_dir) / f"{name}.ids", encoding)


def _streams(
    ids: np.ndarray, batch_size: int, bptt: int, what: str, shared: bool = False, **kw: Any
) -> LMBatches:
    """LMBatches with at most as many streams as the text can fill (2+ tokens each);
    ``shared``: this process's columns of them under torchrun (each rank its own streams,
    so the state it carries from window to window continues its own text)."""
    fitting = min(batch_size, ids.shape[0] // 2)
    if fitting < 1:
        raise ValueError(f"the {what} text has {ids.shape[0]} token(s); it needs at least 2")
    world = distributed.current().world_size
    if shared and fitting < world:
        raise ValueError(
            f"the {what} text gives {fitting} stream(s) (data.batch_size {batch_size}) for "
            f"{world} processes; each process needs at least one: use a batch size of at "
            f"least {world}"
        )
    columns = distributed.shard(fitting) if shared else None
    return LMBatches(ids, fitting, bptt, columns=columns, **kw)


@torch.no_grad()
def evaluate(model: LanguageModel, batches: LMBatches) -> tuple[float, int]:
    """(mean cross-entropy per target token in nats, target tokens) over every window,
    carrying the state across windows as in training."""
    device = next(model.parameters()).device
    total, count, state = 0.0, 0, None
    for inputs, targets in batches.windows(0):
        loss, state = model.loss(inputs.to(device), targets.to(device), state, "sum")
        total += float(loss)
        count += targets.numel()
    return total / count, count


def describe(tokenizer: Tokenizer, loss: float) -> dict[str, float]:
    """Bits per character for character models, perplexity otherwise."""
    if tokenizer.kind == "char":
        return {"bpc": bits_per_token(loss)}
    return {"ppl": perplexity(loss)}


class LMTask:
    """The trainer task: windows of B streams, cross-entropy on the next token."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        train: np.ndarray,
        valid: np.ndarray,
        data: DataConfig,
        seed: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.train = _streams(
            train,
            data.batch_size,
            data.bptt,
            "training",
            shared=True,
            variable_bptt=data.variable_bptt,
            seed=seed,
        )
        self.valid = _streams(valid, data.eval_batch_size, data.bptt, "validation")

    def batches_per_epoch(self, epoch: int) -> int:
        return self.train.num_windows(epoch)

    def batches(self, epoch: int, start: int) -> Iterator[tuple[Tensor, Tensor]]:
        return self.train.windows(epoch, start)

    def train_step(self, model: torch.nn.Module, batch: Any, carry: Any) -> StepResult:
        inputs, targets = batch  # each [T, B]
        device = next(model.parameters()).device
        assert isinstance(model, LanguageModel)
        loss, carry = model.loss(inputs.to(device), targets.to(device), carry)
        # A shorter window's mean loss weighs each token more; AWD-LSTM rescales the rate.
        scale = inputs.shape[0] / self.train.bptt if self.train.variable_bptt else 1.0
        return StepResult(loss, targets.numel(), carry, lr_scale=scale)

    def evaluate(self, model: torch.nn.Module) -> float:
        assert isinstance(model, LanguageModel)
        return evaluate(model, self.valid)[0]

    def describe(self, loss: float) -> dict[str, float]:
        return describe(self.tokenizer, loss)


@dataclass
class LMRun:
    out_dir: Path
    model: LanguageModel
    tokenizer: Tokenizer
    sections: LMSettings
    result: FitResult
    train_tokens: int
    valid_tokens: int


# Fields that may differ from the checkpoint's when resuming: they change how long the
# run goes and how it reports, never the trajectory of the steps it shares.
RESUMABLE = {
    "trainer": {
        "epochs",
        "max_steps",
        "max_minutes",
        "progress",
        "checkpoint_every",
        "threads",
        "device",
    },
    "sample": None,  # every field
}


def resume_sections(
    checkpoint: str | Path, changes: Mapping[str, Mapping[str, Any]] | None = None
) -> LMSettings:
    """The checkpoint's sections with ``changes`` ({section: {field: value}}) applied;
    only the ``RESUMABLE`` fields may change."""
    path = ckpt.resolve(checkpoint, prefer=("last", "best"))
    data = ckpt.read_json(path, ckpt.CONFIG_FILE)
    if isinstance(data.get("meta"), dict) and data["meta"].get("format") == pretrained.FORMAT:
        raise ckpt.CheckpointError(
            f"{str(path)!r} is a pretrained folder (weights without the training state): "
            "there is nothing to resume; resume the run it came from"
        )
    saved = cfg.from_dict(defaults(), data, str(path))
    for section, values in (changes or {}).items():
        allowed = RESUMABLE.get(section, set())
        for name in values:
            if allowed is not None and name not in allowed:
                raise cfg.ConfigError(
                    f"--{section}.{name} cannot change when resuming (the checkpoint has "
                    f"{getattr(getattr(saved, section, None), name, '?')!r}); only "
                    + ", ".join(f"trainer.{n}" for n in sorted(RESUMABLE["trainer"] or ()))
                    + " and sample.* may"
                )
    return cfg.merge(saved, changes or {}, "resume")


def train(
    sections: LMSettings | None = None,
    resume: str | Path | None = None,
    changes: Mapping[str, Mapping[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> LMRun:
    """Train a language model with ``sections`` (default: ``defaults()``), or continue
    the run at ``resume`` (a run or checkpoint directory) exactly, with ``changes``
    ({section: {field: value}}, only ``RESUMABLE`` fields) to its saved config.

    Under torchrun every process calls this; rank 0 claims the run folder, and a job
    torchrun restarted (``--max-restarts``) resumes from that folder's ``last/``. Resuming
    reads the run folder on every process (one machine, or a shared file system)."""
    if resume is not None:
        if sections is not None:
            raise ValueError("pass changes=, not sections=, when resuming")
        trainer_c = resume_sections(resume, changes).trainer
        with (
            distributed.session(trainer_c.device, trainer_c.threads),
            distributed.lock(ckpt.resolve(resume, prefer=("last", "best")).parent) as out_dir,
        ):
            checkpoint = ckpt.resolve(resume, prefer=("last", "best"))  # now no one writes it
            return _train(resume_sections(resume, changes), out_dir, checkpoint, log)
    sections = sections or defaults()
    with (
        distributed.session(sections.trainer.device, sections.trainer.threads),
        distributed.claim(sections.trainer.out) as (out_dir, restarted),
    ):
        if restarted:
            checkpoint = ckpt.resolve(out_dir, prefer=("last",))
            return _train(resume_sections(checkpoint), out_dir, checkpoint, log)
        return _train(sections, out_dir, None, log)


def _shared_corpus(
    data: DataConfig, tokenizer: Tokenizer | None, cache_dir: Path
) -> tuple[Tokenizer, np.ndarray, np.ndarray]:
    """``load_corpus`` on rank 0 (learning the tokenizer and filling the cache), then on
    the other ranks with rank 0's tokenizer, from the cache where they see it (one
    machine, a shared file system), else from the text."""
    loaded: list[tuple[Tokenizer, np.ndarray, np.ndarray]] = []

    def first() -> dict[str, Any]:
        loaded.append(load_corpus(data, tokenizer, cache_dir))
        return loaded[0][0].to_dict()

    learned = distributed.from_main(first)
    if loaded:
        return loaded[0]
    cache = cache_dir if cache_dir.is_dir() else None
    return load_corpus(data, tokenizer_from_dict(learned), cache)


def _train(
    sections: LMSettings,
    out_dir: Path,
    checkpoint: Path | None,
    log: Callable[[str], None],
) -> LMRun:
    """Train (or resume from ``checkpoint``) in the locked run folder ``out_dir``."""
    log = distributed.main_only(log)
    tokenizer = (
        None
        if checkpoint is None
        else tokenizer_from_dict(ckpt.read_json(checkpoint, TOKENIZER_FILE))
    )
    model_c = cfg.check(sections.model, "model")
    if checkpoint is not None and tokenizer is not None:  # before building or reading data
        vocab_size = tokenizer.vocab_size
        ckpt.check_fits(checkpoint, lambda: LanguageModel(model_c, vocab_size), model_c)
    data_c = sections.data
    trainer_c = sections.trainer
    torch.manual_seed(trainer_c.seed)
    tokenizer, train_ids, valid_ids = _shared_corpus(data_c, tokenizer, out_dir / CACHE_DIR)
    model = LanguageModel(model_c, tokenizer.vocab_size)
    task = LMTask(tokenizer, train_ids, valid_ids, data_c, trainer_c.seed)
    meta = {"task": "lm", "rnnkit_version": rnnkit.__version__, "vocab_size": tokenizer.vocab_size}
    extra = {
        ckpt.CONFIG_FILE: cfg.to_dict(sections) | {"meta": meta},
        TOKENIZER_FILE: tokenizer.to_dict(),
    }
    trainer = Trainer(model, task, trainer_c, sections.optim, out_dir, extra, log)
    if checkpoint is not None:
        trainer.resume(checkpoint)
        log(f"resuming {out_dir} at step {trainer.step} (epoch {trainer.epoch})")
    else:
        log(
            f"training a {model_c.num_layers}x{model_c.hidden_size} {model_c.cell} "
            f"({model.num_parameters():,} parameters) on {data_c.text or DEFAULT_CORPUS}: "
            f"{len(train_ids):,} training and {len(valid_ids):,} validation "
            f"{tokenizer.kind} tokens, vocabulary {tokenizer.vocab_size}; run in {out_dir}"
        )
    result = trainer.fit()
    final = trainer.evaluated_model  # the weight average, when the run keeps one
    assert isinstance(final, LanguageModel)
    return LMRun(out_dir, final, tokenizer, sections, result, len(train_ids), len(valid_ids))


def load(
    path: str | Path, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[LanguageModel, Tokenizer, LMSettings]:
    """A trained model from a run directory (its ``best`` checkpoint, or ``which``) or a
    checkpoint directory, in eval mode; with its tokenizer and config sections."""
    model, tokenizer, sections = ckpt.load_run(path, which, _load)
    return model.to(device).eval(), tokenizer, sections


def _load(checkpoint: Path) -> tuple[LanguageModel, Tokenizer, LMSettings]:
    record = pretrained.read(checkpoint, "lm", (TOKENIZER_FILE,))
    _, sections = ckpt.open_checkpoint(checkpoint, "lm", defaults())
    tokenizer = ckpt.read_part(checkpoint, TOKENIZER_FILE, tokenizer_from_dict)
    model = ckpt.build_model(
        checkpoint, lambda: LanguageModel(sections.model, tokenizer.vocab_size), sections.model
    )
    assert isinstance(model, LanguageModel)
    model.pretrained = record
    return model, tokenizer, sections


def _compose(
    model: LanguageModel, tokenizer: Tokenizer | None = None, sample: SampleConfig | None = None
) -> pretrained.Pretrained:
    """``LanguageModel.save_pretrained``'s parts: the tokenizer, and the sampling settings
    ``rnnkit sample`` starts from."""
    return pretrained.compose(
        model,
        "lm",
        defaults(),
        files={TOKENIZER_FILE: ("tokenizer", tokenizer and tokenizer.to_dict())},
        sections={"sample": sample, "data": tokenizer and {"tokenizer": tokenizer.kind}},
        meta={"vocab_size": ("", model.vocab_size)},
    )


PRETRAINED = pretrained.Adapter("lm", lambda checkpoint: _load(checkpoint)[0], _compose)


def evaluate_text(
    model: LanguageModel,
    tokenizer: Tokenizer,
    path: str | Path,
    encoding: str = "utf-8",
    batch_size: int = 16,
    bptt: int = 64,
) -> dict[str, float]:
    """Loss (nats per token), perplexity, bits per token and the share of <unk> on a file."""
    ids = encode_ids(tokenizer, path, encoding)
    loss, count = evaluate(model, _streams(ids, batch_size, bptt, "evaluation"))
    unk = float(np.mean(ids == tokenizer.unk_id))
    return {
        "loss": loss,
        "perplexity": perplexity(loss),
        "bits_per_token": bits_per_token(loss),
        "tokens": float(count),
        "unk_fraction": unk,
    }


def evaluate_file(
    run: str | Path,
    path: str | Path,
    encoding: str | None = None,
    batch_size: int | None = None,
    bptt: int | None = None,
) -> dict[str, Any]:
    """Score a text file with a trained model (``run``: a run or checkpoint directory):
    ``evaluate_text``'s figures, the tokenizer kind and the unit ("character" or "token"). The
    encoding, streams and window default to the run's (data.encoding, data.eval_batch_size,
    data.bptt)."""
    cfg.check_range("batch_size", batch_size, min=1)
    cfg.check_range("bptt", bptt, min=1)
    model, tokenizer, sections = load(run)
    data = sections.data
    figures = evaluate_text(
        model,
        tokenizer,
        path,
        encoding or data.encoding,
        data.eval_batch_size if batch_size is None else batch_size,
        data.bptt if bptt is None else bptt,
    )
    unit = "character" if tokenizer.kind == "char" else "token"
    return figures | {"tokenizer": tokenizer.kind, "unit": unit}


def options_help() -> str:
    return cfg.help_table(defaults())
