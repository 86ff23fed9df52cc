"""The typed config of a seq2seq run: one dataclass per section and ``Seq2SeqSettings``, the run's
sections together. Torch-free, so that ``rnnkit train seq2seq --help`` lists every field
without loading torch; saved in every checkpoint as ``config.json``
(``rnnkit.common.config.to_dict``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.common.config import option
from rnnkit.common.names import CELL_NAMES, TOKENIZER_KINDS
from rnnkit.common.variants import CellVariants
from rnnkit.train.config import OptimConfig, TrainerConfig

ATTENTIONS = ("bahdanau", "luong")


@dataclass
class Seq2SeqConfig(CellVariants):
    """The encoder-decoder's shape (the vocabularies come from the data)."""

    cell: str = option("gru", "recurrent cell kind of the encoder and decoder", choices=CELL_NAMES)
    embedding_size: int = option(64, "source and target embedding width", min=1)
    hidden_size: int = option(128, "hidden units per layer (and direction) of both RNNs", min=1)
    encoder_layers: int = option(1, "stacked encoder layers", min=1)
    decoder_layers: int = option(1, "stacked decoder layers", min=1)
    bidirectional: bool = option(True, "read the source in both directions")
    attention: str = option(
        "bahdanau", "additive (bahdanau) or general (luong)", choices=ATTENTIONS
    )
    attention_size: int = option(128, "width A of the additive attention's hidden layer", min=1)
    dropout: float = option(
        0.1, "dropout on embeddings, between layers and before the output", min=0, lt=1
    )
    embedding_dropout: float = option(
        0.0, "drop whole words from the embedding, one mask per batch (Gal 2016)", min=0, lt=1
    )
    sampling: float = option(
        0.0, "scheduled sampling: chance of feeding the model's own token", min=0, max=1
    )


@dataclass
class Seq2SeqDataConfig:
    """The parallel files (or the generated dates task), tokenizers and batching."""

    train: str | None = option(
        None,
        "training pairs: a source<TAB>target file, or the "
        "source side of aligned files (with train_target)",
    )
    train_target: str | None = option(None, "target side of aligned training files")
    valid: str | None = option(None, "validation pairs (none: the last 10% of train)")
    valid_target: str | None = option(None, "target side of aligned validation files")
    test: str | None = option(None, "test pairs, translated and scored after training")
    test_target: str | None = option(None, "target side of aligned test files")
    dates: int = option(0, "generate the dates task with this many training pairs", min=0)
    dates_valid: int = option(1000, "dates task: validation pairs", min=1)
    dates_test: int = option(10_000, "dates task: held-out test pairs", min=0)
    dates_seed: int = option(0, "dates task: the generator's seed", min=0, max=2**32 - 1)
    tokenizer: str = option("char", "source and target tokens", choices=TOKENIZER_KINDS)
    source_vocab_size: int | None = option(
        None, "cap on the source vocabulary, specials included", min=1
    )
    target_vocab_size: int | None = option(
        None, "cap on the target vocabulary, specials included", min=1
    )
    batch_size: int = option(64, "pairs per batch", min=1)
    encoding: str = option("utf-8", "text encoding of the files")


@dataclass
class DecodeConfig:
    """How translations are searched for (the report after training, and translate)."""

    beam: int = option(1, "beam width (1: greedy)", min=1)
    length_penalty: float = option(0.6, "alpha of Wu et al. 2016's lp; 0: no normalisation", min=0)
    max_length: int | None = option(None, "most target tokens (none: longest training + 10)", min=1)


@dataclass
class Seq2SeqSettings:
    """An encoder-decoder run: its sections, each at the task's defaults."""

    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    data: Seq2SeqDataConfig = field(default_factory=Seq2SeqDataConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3))
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(out="runs/seq2seq", epochs=10, clip_norm=1.0)
    )


def defaults() -> Seq2SeqSettings:
    return Seq2SeqSettings()
