"""The typed config of a language-model run: one dataclass per section and ``LMSettings``, the run's
sections together. Torch-free, so that ``rnnkit train lm --help`` lists every field
without loading torch; saved in every checkpoint as ``config.json``
(``rnnkit.common.config.to_dict``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnkit.common.config import ConfigError, option
from rnnkit.common.names import CELL_NAMES
from rnnkit.common.variants import CellVariants
from rnnkit.decoding.config import SampleConfig
from rnnkit.train.config import OptimConfig, TrainerConfig

DEFAULT_CORPUS = "pydoc_data.topics"


@dataclass
class LMConfig(CellVariants):
    """The language model's shape and initialisation (the vocabulary comes from the tokenizer)."""

    cell: str = option("lstm", "recurrent cell kind", choices=CELL_NAMES)
    num_layers: int = option(2, "stacked recurrent layers", min=1)
    hidden_size: int = option(256, "hidden units per layer", min=1)
    input: str = option("embedding", "input encoding", choices=("embedding", "onehot"))
    embedding_size: int = option(128, "embedding width (ignored for onehot input)", min=1)
    dropout: float = option(
        0.0, "dropout on the input, between layers and before the output", min=0, lt=1
    )
    embedding_dropout: float = option(
        0.0, "drop whole words from the embedding, one mask per batch (Gal 2016)", min=0, lt=1
    )
    tie_weights: bool = option(False, "share the embedding and output matrices (needs D = H, or P)")
    init: str = option(
        "default",
        "uniform: every weight U(-init_scale, init_scale) (Zaremba 2014); orthogonal: "
        "orthogonal recurrent blocks, Xavier input blocks, zero biases; default: torch.nn's",
        choices=("default", "uniform", "orthogonal"),
    )
    init_scale: float = option(0.1, "bound of the uniform init", gt=0)
    unit_forget_bias: bool = option(True, "LSTM forget-gate bias 1 (Jozefowicz 2015, sec. 3)")

    def validate(self) -> LMConfig:
        """The checks that span fields (each field's range is in its ``option``)."""
        super().validate()
        if self.tie_weights and self.input == "onehot":
            raise ConfigError("--model.tie_weights needs --model.input embedding, not onehot")
        out, flag = (
            (self.proj_size, "proj_size") if self.proj_size else (self.hidden_size, "hidden_size")
        )
        if self.tie_weights and self.embedding_size != out:
            raise ConfigError(
                f"--model.tie_weights needs --model.embedding_size == --model.{flag}, got "
                f"{self.embedding_size} and {out}"
            )
        return self


@dataclass
class DataConfig:
    """The text, its tokenizer, and how it is cut into batches."""

    text: str | None = option(None, f"training text file (none: Python's {DEFAULT_CORPUS})")
    valid_text: str | None = option(None, "validation text file (none: the tail of text)")
    valid_fraction: float = option(0.05, "fraction of text held out when no valid_text", gt=0, lt=1)
    encoding: str = option("utf-8", "text encoding of the files")
    tokenizer: str = option("char", "token unit", choices=("char", "word", "bpe"))
    vocab_size: int | None = option(None, "cap on the vocabulary, specials included", min=1)
    min_count: int = option(1, "drop tokens seen fewer times (char, word)", min=1)
    batch_size: int = option(32, "parallel streams B", min=1)
    bptt: int = option(64, "steps per truncated-BPTT window T", min=1)
    variable_bptt: bool = option(
        False, "draw window lengths as AWD-LSTM (Merity 2017); lr scales by T / bptt"
    )
    eval_batch_size: int = option(16, "parallel streams for validation and eval", min=1)


@dataclass
class LMSettings:
    """A language-model run: its sections, each at the task's defaults."""

    model: LMConfig = field(default_factory=lambda: LMConfig(cell="gru"))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_minutes=2.5))
    sample: SampleConfig = field(default_factory=SampleConfig)


def defaults() -> LMSettings:
    """The sections of a language-model run, at their defaults (the README's main job)."""
    # The main job: with no arguments `rnnkit train lm` must finish, samples included,
    # within 3 minutes on 2 cores. A 2x256 GRU learned the most per second in trials on
    # 2 cores (docs/results.md); the time cap guards slower machines and
    # --trainer.max_minutes none lifts it.
    return LMSettings()
