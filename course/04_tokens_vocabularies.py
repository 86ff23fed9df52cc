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
# # 4. Tokens, vocabularies, `<unk>`, one-hot vectors and embeddings
#
# A network reads numbers, not text. A **tokenizer** cuts text into tokens (characters,
# words or subwords), a **vocabulary** numbers them, and an unseen or rare token becomes
# `<unk>`. Each id then becomes a vector: a **one-hot** vector of length V, or a row of an
# **embedding** matrix, which is the same thing multiplied out.
#
# The text is Python's own reference documentation (`pydoc_data.topics`, shipped with
# every Python: nothing to download), the corpus of rnnkit's main job. Shapes: T tokens,
# B batch, V vocabulary, E embedding width.

# %%
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from rnnkit.data.tokenizers import EOS_ID, SPECIALS, UNK_ID, train_tokenizer
from rnnkit.tasks.lm.api import default_corpus

corpus = default_corpus()
train_text, held_out = corpus[:200_000], corpus[200_000:260_000]
print(f"{len(corpus):,} characters; training on {len(train_text):,}, held out {len(held_out):,}")
print(train_text[:300])

# %% [markdown]
# ## Characters
#
# The vocabulary is the four specials at fixed ids (`<pad>` 0, `<unk>` 1, `<bos>` 2,
# `<eos>` 3), then every character seen in training. From scratch, then rnnkit's:

# %%
vocabulary = [*SPECIALS, *sorted(set(train_text))]
index = {token: i for i, token in enumerate(vocabulary)}


def encode_chars(text):
    return [index.get(c, index["<unk>"]) for c in text]


chars = train_tokenizer("char", [train_text])
assert chars.tokens == vocabulary
assert chars.encode(held_out) == encode_chars(held_out)
assert chars.decode(chars.encode(train_text)) == train_text  # nothing lost in training text
unseen = chars.unknown(held_out)
print(f"V = {chars.vocab_size}; held-out characters never seen in training: {unseen}")
assert (np.array(chars.encode(held_out)) == UNK_ID).sum() == sum(held_out.count(c) for c in unseen)

# %% [markdown]
# ## Words, a capped vocabulary and `<unk>`
#
# Words are whitespace-separated, and the end of each line is `<eos>` (the Penn Treebank
# convention). A word vocabulary is capped: keep the V - 4 most frequent words and map
# every other word to `<unk>`. The cap trades the softmax's size against how much of the
# text the model sees as `<unk>`.

# %%
V = 2000
counts = Counter(train_text.split())
kept = [w for w, _ in counts.most_common(V - len(SPECIALS))]
word_index = {w: i for i, w in enumerate([*SPECIALS, *kept])}


def encode_words(text):
    ids = []
    lines = text.split("\n")
    for n, line in enumerate(lines):
        ids += [word_index.get(w, UNK_ID) for w in line.split()]
        if n < len(lines) - 1:
            ids.append(EOS_ID)  # the end of a line
    return ids


words = train_tokenizer("word", [train_text], vocab_size=V)
assert words.vocab_size == V
assert words.encode(held_out) == encode_words(held_out)
for cap in (500, 2000, 8000):
    ids = np.array(train_tokenizer("word", [train_text], vocab_size=cap).encode(held_out))
    print(f"V = {cap:5d}: {(ids == UNK_ID).mean():6.1%} of held-out tokens are <unk>")
print(words.decode(words.encode(held_out[:200])))

# %% [markdown]
# ## Subwords (byte-level BPE)
#
# Byte-pair encoding (Sennrich et al. 2016) starts from bytes and merges the most frequent
# adjacent pair until the vocabulary is full: frequent words become one token, rare ones
# split into pieces, and no text is ever `<unk>` because every byte is in the vocabulary.

# %%
bpe = train_tokenizer("bpe", [train_text], vocab_size=600)
pieces = [bpe.token_text(i) for i in bpe.encode("The tokenizer splits uncommonly long words.")]
print(pieces)
assert bpe.decode(bpe.encode(held_out)) == held_out  # lossless, even on unseen text
assert UNK_ID not in bpe.encode(held_out + " ☃ Ωmega")
print(
    f"held out: {len(held_out):,} chars -> {len(bpe.encode(held_out)):,} BPE tokens, "
    f"{len(words.encode(held_out)):,} words"
)

# %% [markdown]
# ## One-hot vectors and embeddings
#
# Id $i$ as a one-hot vector $e_i \in \{0, 1\}^V$; a layer that multiplies it by a matrix
# $W$ [V, E] just selects row $i$. An embedding layer is that product without the zeros:
# a table lookup. rnnkit's language model takes either (`--model.input onehot` or
# `embedding`).

# %%
ids = torch.tensor(chars.encode("def f(x):"))  # [T]
one_hot = np.eye(chars.vocab_size)[ids.numpy()]  # [T, V], from scratch
torch.testing.assert_close(F.one_hot(ids, chars.vocab_size).double(), torch.from_numpy(one_hot))
assert one_hot.sum(1).tolist() == [1.0] * len(ids)

embedding = torch.nn.Embedding(chars.vocab_size, 8, dtype=torch.float64)  # W [V, E]
by_product = torch.from_numpy(one_hot) @ embedding.weight  # [T, V] @ [V, E]
torch.testing.assert_close(by_product, embedding(ids))  # the lookup == the product
print(
    f"one-hot {tuple(one_hot.shape)} @ W {tuple(embedding.weight.shape)} == embedding(ids) {tuple(embedding(ids).shape)}"
)

# %% [markdown]
# The same holds inside a recurrent layer: with one-hot input, the first layer's input
# projection $W_{ih} e_i$ is column $i$ of $W_{ih}$, so the one-hot model is an embedding
# model whose embedding is $W_{ih}^\top$ (with E = V, no saving in parameters).

# %%
from rnnkit.tasks.lm.config import LMConfig
from rnnkit.tasks.lm.model import LanguageModel

torch.manual_seed(0)
model = LanguageModel(
    LMConfig(cell="gru", num_layers=1, hidden_size=16, input="onehot"), chars.vocab_size
).double()
W_ih = model.rnn.weight_ih_l0  # [3H, V]
gx_one_hot = F.one_hot(ids, chars.vocab_size).double() @ W_ih.T  # [T, 3H]
torch.testing.assert_close(gx_one_hot, W_ih.T[ids])  # column lookup
logits, _ = model(ids[:, None])  # [T, 1, V]
assert logits.shape == (len(ids), 1, chars.vocab_size)
