# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. A language model, and sampling new sequences
#
# A recurrent language model reads tokens $y_1 \dots y_t$ and outputs a distribution over
# the next one, $p(y_{t+1} \mid y_{\le t}) = \mathrm{softmax}(V h_t + b)$. Trained on the
# cross-entropy of the true next token, its loss in nats per token is the log of the
# perplexity. To write new text, feed it a prime, draw a token from the distribution,
# feed that token back, and repeat (Karpathy's char-rnn; the sequence-models course's
# "sampling novel sequences").
#
# This chapter trains a tiny character model and a tiny word model on Python's
# documentation (`pydoc_data.topics`) for a few seconds each with `rnnkit.tasks.lm`, then
# writes the perplexity and the sampling loop from scratch and checks them against
# rnnkit's (`lm.evaluate_text`, `rnnkit.decoding`): temperature, greedy, stopping at
# `<eos>`, and never emitting `<unk>`. Shapes: T steps, N continuations, V vocabulary.

# %%
import io
import math
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch
import torch.nn.functional as F

from rnnkit.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from rnnkit.decoding import SampleConfig, sample
from rnnkit.decoding.sampling import generate
from rnnkit.tasks import lm
from rnnkit.tasks.lm.api import default_corpus

work = Path(tempfile.mkdtemp())
corpus = default_corpus()
(work / "train.txt").write_text(corpus[:150_000], encoding="utf-8")
(work / "held_out.txt").write_text(corpus[300_000:306_000], encoding="utf-8")


def train(name, epochs, **data):
    """A few seconds of training; the trainer's log kept to its last line."""
    settings = lm.configure(
        text=str(work / "train.txt"),
        model={"cell": "gru", "num_layers": 1, "hidden_size": 192, "embedding_size": 48},
        data={"batch_size": 32} | data,
        optim={"lr": 0.004},
        trainer={"progress": False, "out": str(work / name), "max_minutes": None, "epochs": epochs},
    )
    log = io.StringIO()
    with redirect_stdout(log), redirect_stderr(log):
        run = lm.train(settings)
    print(log.getvalue().strip().splitlines()[-1])
    return run.model.eval(), run.tokenizer


char_model, chars = train("char", 4, tokenizer="char", bptt=64)

# %% [markdown]
# ## Perplexity, from scratch
#
# Run the model over the held-out text as one sequence, take the cross-entropy of each
# next character, and exponentiate the mean. `lm.evaluate_text` cuts the text into
# windows and carries the state across them, which is exact, so the two agree.

# %%
held_out = (work / "held_out.txt").read_text(encoding="utf-8")
ids = torch.tensor(chars.encode(held_out))  # [T]
with torch.no_grad():
    logits, _ = char_model(ids[:-1, None])  # [T-1, 1, V]
nats = F.cross_entropy(logits[:, 0], ids[1:]).item()
ours = {"loss": nats, "perplexity": math.exp(nats), "bits_per_token": nats / math.log(2)}
theirs = lm.api.evaluate_text(char_model, chars, work / "held_out.txt", batch_size=1, bptt=64)
print({k: round(v, 4) for k, v in ours.items()}, "<- from scratch")
print({k: round(theirs[k], 4) for k in ours}, "<- lm.evaluate_text")
for key in ours:
    assert math.isclose(ours[key], theirs[key], rel_tol=1e-4), key
assert ours["perplexity"] < 0.5 * chars.vocab_size  # far better than a uniform guess

# %% [markdown]
# ## The sampling loop, from scratch
#
# At each step: mask the tokens that may never be drawn (`<pad>`, `<bos>`, and `<unk>`
# unless allowed, `<eos>` unless it ends the text), divide the logits by the temperature,
# softmax, draw one token, feed it back. rnnkit's `generate` does the same in the same
# order with the same random generator, so with one seed the two agree token for token.


# %%
@torch.no_grad()
def sample_from_scratch(
    model,
    tokenizer,
    prime,
    n=1,
    max_tokens=200,
    temperature=1.0,
    seed=0,
    greedy=False,
    allow_unk=False,
    stop_at_eos=True,
):
    generator = torch.Generator().manual_seed(seed)
    banned = [PAD_ID, BOS_ID] + ([] if allow_unk else [UNK_ID]) + ([] if stop_at_eos else [EOS_ID])
    prime_ids = torch.tensor(tokenizer.encode(prime))[:, None].expand(-1, n).contiguous()  # [P, N]
    logits, state = model(prime_ids)  # [P, N, V]
    logits = logits[-1]  # [N, V]: the distribution after the whole prime
    done = torch.zeros(n, dtype=torch.bool)
    out = []
    for _ in range(max_tokens):
        logits = logits.clone()
        logits[:, banned] = float("-inf")
        if greedy:
            token = logits.argmax(-1)
        else:
            probs = (logits / temperature).softmax(-1)
            token = torch.multinomial(probs, 1, generator=generator)[:, 0]  # [N]
        token = token.masked_fill(done, PAD_ID)  # a finished continuation pads
        out.append(token)
        done |= token == EOS_ID
        if done.all():
            break
        logits, state = model(token[None], state)
        logits = logits[0]
    return torch.stack(out, 1)  # [N, steps]


prime = "The "
ours = sample_from_scratch(char_model, chars, prime, n=3, max_tokens=120, temperature=0.8, seed=7)
config = SampleConfig(prime=prime, num_samples=3, max_tokens=120, temperature=0.8, seed=7)
theirs = torch.stack(list(generate(char_model, chars, config)), 1)  # [N, steps]
assert torch.equal(ours, theirs)
for text in sample(char_model, chars, config):
    print(repr(prime + text))

# %% [markdown]
# ## Temperature
#
# Dividing the logits by $\tau$ sharpens the distribution ($\tau < 1$: safer, more
# repetitive text) or flattens it ($\tau > 1$: more surprising, more mistakes). As
# $\tau \to 0$ sampling becomes the argmax (greedy decoding).

# %%
with torch.no_grad():
    logits, _ = char_model(torch.tensor(chars.encode("def "))[:, None])
entropies = {}
for tau in (0.25, 0.5, 1.0, 1.5, 2.0):
    p = (logits[-1, 0] / tau).softmax(-1)
    entropies[tau] = float(-(p * p.clamp_min(1e-30).log()).sum())
print({tau: round(h, 3) for tau, h in entropies.items()}, "nats")
assert list(entropies.values()) == sorted(entropies.values())  # flatter as tau grows

greedy = sample(char_model, chars, SampleConfig(prime="def ", max_tokens=60, greedy=True))[0]
ours_greedy = sample_from_scratch(char_model, chars, "def ", max_tokens=60, greedy=True)
assert chars.decode(ours_greedy[0].tolist()) == greedy
cold = sample_from_scratch(char_model, chars, "def ", max_tokens=60, temperature=1e-4)
assert torch.equal(cold, ours_greedy)  # tau -> 0 is the argmax
print(repr("def " + greedy))

# %% [markdown]
# ## Words: stopping at `<eos>`, and never emitting `<unk>`
#
# A word model with a capped vocabulary predicts `<eos>` at each line end and `<unk>` for
# every rare word. Sampling stops a continuation at its first `<eos>` (a line), and masks
# `<unk>` out: giving it probability 0 and renormalising is exactly "draw again until the
# token is not `<unk>`" (rejection sampling), without the loop.

# %%
word_model, words = train("word", 5, tokenizer="word", vocab_size=2000, bptt=32)
config = SampleConfig(prime="The", num_samples=8, max_tokens=60, temperature=1.0, seed=1)
steps = torch.stack(list(generate(word_model, words, config)), 1)  # [N, steps]
for row in steps.tolist():
    if EOS_ID in row:  # everything after the first <eos> is padding
        first = row.index(EOS_ID)
        assert all(t == PAD_ID for t in row[first + 1 :])
assert (steps == EOS_ID).any(1).sum() >= 4  # most continuations ended their line
assert not (steps == UNK_ID).any()
for text in sample(word_model, words, config)[:4]:
    print(repr("The" + text))

# with <unk> allowed, the model emits it about as often as it saw it
with_unk = torch.stack(
    list(
        generate(
            word_model,
            words,
            SampleConfig(
                prime="The", num_samples=8, max_tokens=60, seed=1, allow_unk=True, stop_at_eos=False
            ),
        )
    ),
    1,
)
unk_share = float((with_unk == UNK_ID).float().mean())
print(f"<unk> allowed: {unk_share:.0%} of sampled words are <unk>")
assert unk_share > 0.02

# masking = renormalising over the rest = rejection sampling's distribution; at the
# held-out position where the model expects <unk> most
with torch.no_grad():
    logits, _ = word_model(torch.tensor(words.encode(held_out))[:, None])  # [T, 1, V]
at = int(logits[:, 0].softmax(-1)[:, UNK_ID].argmax())
p = logits[at, 0].softmax(-1)
masked = logits[at, 0].clone()
masked[UNK_ID] = float("-inf")
rest = p.clone()
rest[UNK_ID] = 0
torch.testing.assert_close(masked.softmax(-1), rest / (1 - p[UNK_ID]))
assert p[UNK_ID] > 0.1
print(
    f"p(<unk>) = {float(p[UNK_ID]):.2f} there; masked out, every other word's probability "
    f"scales by 1 / {float(1 - p[UNK_ID]):.2f}"
)
