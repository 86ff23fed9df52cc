"""The typed config of a classify run: one dataclass per section and ``ClassifySettings``, the run's
sections together. Torch-free, so that ``rnnkit train classify --help`` lists every field
without loading torch; saved in every checkpoint as ``config.json``
(``rnnkit.common.config.to_dict``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.common.config import option
from rnnkit.common.names import CELL_NAMES, TOKENIZER_KINDS
from rnnkit.common.variants import CellVariants
from rnnkit.train.config import OptimConfig, TrainerConfig

POOLINGS = ("final", "mean", "max", "attention")


@dataclass
class ClassifierConfig(CellVariants):
    """The classifier's shape (the vocabulary and labels come from the data)."""

    cell: str = option("lstm", "recurrent cell kind", choices=CELL_NAMES)
    num_layers: int = option(1, "stacked recurrent layers", min=1)
    hidden_size: int = option(150, "hidden units per layer and direction", min=1)
    bidirectional: bool = option(True, "read the sentence in both directions")
    embedding_size: int = option(300, "word embedding width", min=1)
    pooling: str = option("max", "how the states become one vector", choices=POOLINGS)
    dropout: float = option(
        0.5, "dropout on embeddings, between layers and before the output", min=0, lt=1
    )
    embedding_dropout: float = option(
        0.0, "drop whole words from the embedding, one mask per batch (Gal 2016)", min=0, lt=1
    )


@dataclass
class ClassifyDataConfig:
    """The labelled files and how they are read and batched."""

    train: str | None = option(None, "training file: label<space>text lines, CSV/TSV or JSONL")
    valid: str | None = option(None, "validation file (none: the last 10% of train)")
    format: str | None = option(None, "sst, csv, tsv or jsonl (none: from the file suffix)")
    text_column: str = option("text", "CSV/TSV/JSONL text column")
    label_column: str = option("label", "CSV/TSV/JSONL label column")
    encoding: str = option("utf-8", "text encoding of the files")
    lowercase: bool = option(False, "lowercase the text")
    tokenizer: str = option("word", "token unit", choices=TOKENIZER_KINDS)
    min_count: int = option(1, "tokens seen fewer times become <unk>", min=1)
    vocab_size: int | None = option(None, "cap on the vocabulary, specials included", min=1)
    batch_size: int = option(32, "sentences per batch", min=1)
    word_dropout: float = option(
        0.0,
        "probability of replacing each training word by <unk> (Iyyer et al. 2015, sec. 3)",
        min=0,
        lt=1,
    )
    vectors: str | None = option(None, "word2vec/GloVe text file to initialise embeddings")
    pretrained_lm: str | None = option(
        None, "word language model (an `rnnkit train lm` run) to start from (Dai & Le 2015)"
    )
    pretrained_lm_reverse: str | None = option(
        None, "word language model trained on reversed text, to start the backward direction"
    )


@dataclass
class ClassifySettings:
    """A classifier run: its sections, each at the task's defaults."""

    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3))
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(out="runs/classify", epochs=10)
    )


def defaults() -> ClassifySettings:
    return ClassifySettings()
