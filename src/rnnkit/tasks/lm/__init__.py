"""Language modelling: a recurrent LM over characters, words or BPE pieces, trained with
truncated BPTT, evaluated in perplexity and bits per token, sampled from.

from rnnkit.tasks import lm
run = lm.train(lm.configure(text="my.txt", model={"hidden_size": 512}))
model, tokenizer, config = lm.load(run.out_dir)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.tasks.lm.api import LMRun, LMTask, configure, evaluate_file, load, train
    from rnnkit.tasks.lm.config import DataConfig, LMConfig, LMSettings, defaults
    from rnnkit.tasks.lm.model import LanguageModel

__all__ = [
    "DataConfig",
    "LMConfig",
    "LMRun",
    "LMSettings",
    "LMTask",
    "LanguageModel",
    "configure",
    "defaults",
    "evaluate_file",
    "load",
    "train",
]

# Loaded on first use: ``rnnkit.tasks.lm.config`` must import without torch.
__getattr__ = lazy_exports(
    __name__,
    {
        "DataConfig": "rnnkit.tasks.lm.config",
        "LMConfig": "rnnkit.tasks.lm.config",
        "LMRun": "rnnkit.tasks.lm.api",
        "LMSettings": "rnnkit.tasks.lm.config",
        "LMTask": "rnnkit.tasks.lm.api",
        "LanguageModel": "rnnkit.tasks.lm.model",
        "configure": "rnnkit.tasks.lm.api",
        "defaults": "rnnkit.tasks.lm.config",
        "evaluate_file": "rnnkit.tasks.lm.api",
        "load": "rnnkit.tasks.lm.api",
        "train": "rnnkit.tasks.lm.api",
    },
)
