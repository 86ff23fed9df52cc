"""The typed config of a tag run: one dataclass per section and ``TagSettings``, the run's
sections together. Torch-free, so that ``rnnkit train tag --help`` lists every field
without loading torch; saved in every checkpoint as ``config.json``
(``rnnkit.common.config.to_dict``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.common.config import option
from rnnkit.common.names import CELL_NAMES
from rnnkit.common.variants import CellVariants
from rnnkit.tasks.tag.schemes import SCHEMES
from rnnkit.train.config import OptimConfig, TrainerConfig


@dataclass
class TaggerConfig(CellVariants):
    """The tagger's shape (vocabularies and the tag set come from the data)."""

    cell: str = option("lstm", "recurrent cell kind", choices=CELL_NAMES)
    num_layers: int = option(1, "stacked word-level recurrent layers", min=1)
    hidden_size: int = option(100, "word-level hidden units per direction", min=1)
    embedding_size: int = option(100, "word embedding width", min=1)
    char_embedding_size: int = option(25, "character embedding width (0: no characters)", min=0)
    char_hidden_size: int = option(25, "character BiRNN hidden units per direction", min=1)
    output: str = option("crf", "output layer", choices=("crf", "softmax"))
    dropout: float = option(0.5, "dropout on the word features and before the output", min=0, lt=1)
    embedding_dropout: float = option(
        0.0, "drop whole words from the embedding, one mask per batch (Gal 2016)", min=0, lt=1
    )


@dataclass
class TagDataConfig:
    """The CoNLL files, their columns and tag scheme, and batching."""

    train: str | None = option(None, "training file in CoNLL columns")
    valid: str | None = option(None, "validation file (none: the last 10% of train)")
    token_column: int = option(0, "column of the tokens", min=0)
    tag_column: int = option(-1, "column of the tags (-1: the last)", min=-1)
    scheme: str = option("IOB1", "the files' tag scheme", choices=SCHEMES)
    train_scheme: str = option("BIOES", "the scheme the model learns", choices=SCHEMES)
    lowercase: bool = option(True, "look words up lowercased (characters keep case)")
    zero_digits: bool = option(True, "replace every digit by 0 for the word lookup")
    singleton_unk: float = option(
        0.5, "probability of replacing a training singleton by <unk>", min=0, max=1
    )
    batch_size: int = option(10, "sentences per batch", min=1)
    max_word_length: int = option(30, "characters per word seen by the character BiRNN", min=1)
    encoding: str = option("utf-8", "text encoding of the files")


@dataclass
class TagSettings:
    """A tagger run: its sections, each at the task's defaults."""

    model: TaggerConfig = field(default_factory=TaggerConfig)
    data: TagDataConfig = field(default_factory=TagDataConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(optimizer="sgd", lr=0.015, momentum=0.9)
    )
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(out="runs/tag", epochs=10, clip_norm=5.0)
    )


def defaults() -> TagSettings:
    return TagSettings()
