"""Tiny language models saved as runs for the viewer's tests (tests/test_viz*.py):
random weights, any cell and tokenizer, on a text with quotes, brackets and characters
outside the Basic Multilingual Plane (two UTF-16 units each)."""

from __future__ import annotations

from pathlib import Path

import torch

from rnnkit.data.tokenizers import Tokenizer, train_tokenizer
from rnnkit.tasks.lm.config import LMConfig
from rnnkit.tasks.lm.model import LanguageModel

TEXT = (
    'Il dit « bonjour » et (très) vite: "café 😀 noir" puis\n'
    "she said 'ok' — [a (b) c] \"𝄞 clef\" done.\n"
    'x = f("a", (1, 2)) # 😀😀 fin\n'
)


def tokenizer(kind: str) -> Tokenizer:
    extra = {"vocab_size": 300} if kind == "bpe" else {}
    return train_tokenizer(kind, [TEXT * 2], **extra)


def model(cell: str, tok: Tokenizer, seed: int = 0, **config: object) -> LanguageModel:
    """A 2-layer model with weights jittered away from their initial values."""
    torch.manual_seed(seed)
    settings = {"hidden_size": 8, "num_layers": 2, "embedding_size": 6, "dropout": 0.0}
    lm = LanguageModel(LMConfig(cell=cell, **(settings | config)), tok.vocab_size)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return lm.eval()


def saved(folder: Path, cell: str = "lstm", kind: str = "char", **config: object) -> Path:
    """A saved model that ``rnnkit.tasks.lm.api.load`` (and ``rnnkit viz``) reads."""
    tok = tokenizer(kind)
    model(cell, tok, **config).save_pretrained(folder, tokenizer=tok)
    return folder
