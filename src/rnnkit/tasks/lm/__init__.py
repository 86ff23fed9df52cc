"""Language modelling: a recurrent LM over characters, words or BPE pieces, trained with
truncated BPTT, evaluated in perplexity and bits per token, sampled from.

from rnnkit.tasks import lm
run = lm.train(lm.configure(text="my.txt", model={"hidden_size": 512}))
model, tokenizer, config = lm.load(run.out_dir)
"""

from rnnkit.tasks.lm.api import (
    DataConfig,
    LMRun,
    LMTask,
    configure,
    defaults,
    evaluate_file,
    load,
    train,
)
from rnnkit.tasks.lm.model import LanguageModel, LMConfig

__all__ = [
    "DataConfig",
    "LMConfig",
    "LMRun",
    "LMTask",
    "LanguageModel",
    "configure",
    "defaults",
    "evaluate_file",
    "load",
    "train",
]
