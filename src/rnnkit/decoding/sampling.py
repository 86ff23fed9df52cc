"""Sampling from a language model: greedy, temperature, top-k and top-p, streamed.

At each step the next-token distribution is shaped in this order:

    1. specials masked out: <pad> and <bos> always, <unk> unless ``allow_unk``, <eos>
       unless ``stop_at_eos`` (a masked token gets probability 0, so the sampler
       effectively resamples among the rest, as the char-RNN course's "never emit
       UNK" advice asks, without a retry loop);
    2. logits / temperature;
    3. top-k: keep the k most probable tokens (Fan et al. 2018);
    4. top-p: keep the smallest set of most probable tokens whose probability sums to at
       least p (nucleus sampling, Holtzman et al. 2020); the most probable always stays;
    5. greedy takes the argmax, otherwise one token is drawn from the renormalised rest.

``generate`` is a generator that yields one id per continuation per step ([N] int64),
so callers print text as it is produced; N continuations run as one batch. A
continuation that emits <eos> is finished: it yields ``<pad>`` (id 0) afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import Tensor

from rnnkit.common.config import check
from rnnkit.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from rnnkit.decoding.config import SampleConfig


class StepModel(Protocol):
    """What sampling needs of a language model: ``model(ids [T, N], state) -> (logits
    [T, N, V], state)``, its ``vocab_size``, and ``torch.nn.Module``'s parameters and
    train/eval switch."""

    vocab_size: int
    training: bool

    def __call__(self, ids: Tensor, state: Any = None) -> tuple[Tensor, Any]: ...
    def parameters(self) -> Iterator[torch.nn.Parameter]: ...
    def eval(self) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...


def special_mask(vocab_size: int, allow_unk: bool, allow_eos: bool) -> Tensor:
    """[V] bool, True for the ids that may never be sampled."""
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[[PAD_ID, BOS_ID]] = True
    mask[UNK_ID] = not allow_unk
    mask[EOS_ID] = not allow_eos
    return mask


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """logits [N, V] -> the same with -inf outside the top-k and the top-p nucleus."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # [N, 1]: the k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # [N, V]
        probs = sorted_logits.softmax(dim=-1)
        # Mass strictly before each token: keep a token if the ones before it have not
        # yet reached top_p, so the most probable token always stays.
        before = probs.cumsum(dim=-1) - probs
        drop_sorted = before >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits: Tensor, config: SampleConfig, generator: torch.Generator | None) -> Tensor:
    """logits [N, V] (specials already masked) -> ids [N]."""
    if config.greedy:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits / config.temperature, config.top_k, config.top_p)
    probs = logits.float().softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def encode_prime(tokenizer: Tokenizer, prime: str) -> list[int]:
    """The priming ids; an unknown character or word is an error that names it.

    An empty prime starts after a line break ("\\n" for char and bpe models, <eos> for
    word models), the most neutral context a model trained on plain text has seen.
    """
    unknown = tokenizer.unknown(prime)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10])
        unit = "character" if tokenizer.kind == "char" else "word"
        raise ValueError(
            f"the prime text has {len(unknown)} {unit}(s) not in the model's vocabulary "
            f"of {tokenizer.vocab_size}: {shown}; remove or replace them"
        )
    ids = tokenizer.encode(prime) if prime else []
    if not ids:
        newline = tokenizer.encode("\n")
        ids = newline if newline and UNK_ID not in newline else [EOS_ID]
    return ids


@torch.no_grad()
def generate(
    model: StepModel, tokenizer: Tokenizer, config: SampleConfig | None = None
) -> Iterator[Tensor]:
    """Yield ids [N] (one per continuation) each step, up to ``config.max_tokens`` steps."""
    config = check(config or SampleConfig(), "sample")
    if tokenizer.vocab_size != model.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary "
            f"is {model.vocab_size}"
        )
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if config.seed is None:
        generator.seed()
    else:
        generator.manual_seed(config.seed)
    N = config.num_samples
    prime = torch.tensor(encode_prime(tokenizer, config.prime), device=device)
    was_training = model.training
    model.eval()
    try:
        logits, state = model(prime[:, None].expand(-1, N).contiguous())  # [P, N, V]
        logits = logits[-1]  # [N, V]: the distribution after the whole prime
        mask = special_mask(model.vocab_size, config.allow_unk, config.stop_at_eos).to(device)
        done = torch.zeros(N, dtype=torch.bool, device=device)
        for _ in range(config.max_tokens):
            ids = next_token(logits.masked_fill(mask, float("-inf")), config, generator)
            ids = ids.masked_fill(done, PAD_ID)
            yield ids
            done |= ids == EOS_ID
            if bool(done.all()):
                return
            logits, state = model(ids[None], state)  # [1, N, V]
            logits = logits[0]
    finally:
        model.train(was_training)


def sample(model: StepModel, tokenizer: Tokenizer, config: SampleConfig | None = None) -> list[str]:
    """The continuations of ``config.prime`` as text (without the prime)."""
    config = config or SampleConfig()
    steps = list(generate(model, tokenizer, config))
    if not steps:
        return [""] * config.num_samples
    ids = torch.stack(steps, dim=1).tolist()  # [N, steps]
    return ["".join(tokenizer.decode_stream([i for i in row if i != PAD_ID])) for row in ids]
