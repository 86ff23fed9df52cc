"""How to sample from a language model: the typed config, torch-free so that the
command line's help never imports torch (``rnnkit.decoding.sampling`` re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass

from rnnkit.common.config import option


@dataclass
class SampleConfig:
    """How to draw text from a trained language model."""

    prime: str = option("", "text the continuations start from")
    max_tokens: int = option(400, "tokens to generate per continuation", min=1)
    num_samples: int = option(1, "continuations, sampled as one batch", min=1)
    temperature: float = option(
        0.8, "divide the logits by this (lower: safer text; greedy for the argmax)", gt=0
    )
    top_k: int = option(0, "keep only the k most probable tokens (0: all)", min=0)
    top_p: float = option(
        1.0, "keep the most probable tokens up to this mass (1: all)", gt=0, max=1
    )
    greedy: bool = option(False, "always take the most probable token")
    seed: int | None = option(0, "random seed (none: a fresh one each time)", min=0, max=2**32 - 1)
    allow_unk: bool = option(False, "let <unk> be sampled")
    stop_at_eos: bool = option(True, "end a continuation at <eos>")
