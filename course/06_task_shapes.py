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
# # 6. Deep and bidirectional RNNs, and the task shapes
#
# Stacking layers (each reads the sequence of states below it) gives a **deep** RNN; a
# second layer run backwards in time gives a **bidirectional** one, whose state at t has
# read the whole sequence. The shape of a task says where the inputs enter and where the
# outputs leave:
#
# | shape | example | rnnkit |
# |---|---|---|
# | many-to-one | sentiment of a sentence | `rnnkit.tasks.classify` |
# | aligned many-to-many | a tag per word (named entities, with a CRF) | `rnnkit.tasks.tag` |
# | unaligned many-to-many | translating a written date to ISO (encoder-decoder, attention) | `rnnkit.tasks.seq2seq` |
# | one-to-many | music from silence | `rnnkit.tasks.music` |
# | many-to-many ahead | forecasting a series | `rnnkit.tasks.forecast` |
#
# Each piece is built from scratch (plain torch) next to rnnkit's, and each task is trained
# for a few seconds on tiny generated data through its Python API. Shapes: T steps,
# B batch, D inputs, H hidden units per direction, K tags.

# %%
import io
import itertools
import json
import random
import re
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch

import rnnkit
from rnnkit.tasks.classify import api as classify
from rnnkit.tasks.forecast import api as forecast
from rnnkit.tasks.forecast.series import builtin, split_points
from rnnkit.tasks.music import api as music
from rnnkit.tasks.music.data import piano_roll
from rnnkit.tasks.seq2seq import api as seq2seq
from rnnkit.tasks.seq2seq.model import Attention, Memory
from rnnkit.tasks.tag import api as tag
from rnnkit.tasks.tag.crf import CRF

work = Path(tempfile.mkdtemp())
quiet = {"progress": False, "max_minutes": None}


def quietly(train, settings):
    """Run a task's train() with its log kept to the last line."""
    log = io.StringIO()
    with redirect_stdout(log), redirect_stderr(log):
        run = train(settings, log=lambda line: print(line))
    print(log.getvalue().strip().splitlines()[-1])
    return run


# %% [markdown]
# ## Deep and bidirectional, from scratch
#
# Layer 1 runs forward and backward over x, each direction over each sequence's own
# length (the backward one starts at the last real step, not at the padding);
# the two outputs are concatenated [T, B, 2H] and are layer 2's input. Below with
# `torch.nn.GRUCell`s holding the layer's weights, against `rnnkit.GRU(num_layers=2,
# bidirectional=True)` called with `lengths=`.

# %%
T, B, D, H = 6, 3, 4, 5
torch.manual_seed(0)
x = torch.randn(T, B, D, dtype=torch.float64)  # [T, B, D]
lengths = torch.tensor([6, 4, 2])
layer = rnnkit.GRU(D, H, num_layers=2, bidirectional=True, dtype=torch.float64)


def cell_of(layer, name):
    w_ih, w_hh = getattr(layer, f"weight_ih_{name}"), getattr(layer, f"weight_hh_{name}")
    cell = torch.nn.GRUCell(w_ih.shape[1], w_hh.shape[1], dtype=torch.float64)  # D (or 2H), H
    for part in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        setattr(cell, part, getattr(layer, f"{part}_{name}"))
    return cell


def direction(cell, x, lengths, reverse):
    out = torch.zeros(x.shape[0], x.shape[1], cell.hidden_size, dtype=x.dtype)  # [T, B, H]
    finals = []
    for b, L in enumerate(lengths.tolist()):
        h = torch.zeros(1, cell.hidden_size, dtype=x.dtype)
        steps = range(L - 1, -1, -1) if reverse else range(L)
        for t in steps:
            h = cell(x[t, b][None], h)
            out[t, b] = h[0]
        finals.append(h[0])
    return out, torch.stack(finals)


inputs, finals = x, []
for l in range(2):
    forward, h_f = direction(cell_of(layer, f"l{l}"), inputs, lengths, reverse=False)
    backward, h_b = direction(cell_of(layer, f"l{l}_reverse"), inputs, lengths, reverse=True)
    inputs = torch.cat([forward, backward], dim=2)  # [T, B, 2H]: the next layer's input
    finals += [h_f, h_b]

out, h_n = layer(x, lengths=lengths)  # [T, B, 2H], [layers * 2, B, H]
torch.testing.assert_close(out, inputs)
torch.testing.assert_close(h_n, torch.stack(finals))
print(
    f"from scratch == rnnkit.GRU(num_layers=2, bidirectional=True): output {tuple(out.shape)}, h_n {tuple(h_n.shape)}"
)

# %% [markdown]
# ## Many-to-one: sentiment
#
# One label per sentence from the states (here max-pooled over time, both directions).
# The data: generated reviews whose label is the adjective's polarity, flipped by a
# preceding "not", so word order matters.

# %%
positive, negative = (
    ["good", "great", "fun", "moving", "clever"],
    ["bad", "dull", "awful", "boring", "weak"],
)
subjects = ["the film", "this movie", "the plot", "the cast", "the ending", "it"]
rng = random.Random(0)


def review():
    adjective = rng.choice(positive + negative)
    negated = rng.random() < 0.4
    label = (adjective in positive) != negated
    words = f"{rng.choice(subjects)} was {'not ' if negated else ''}{rng.choice(['', 'very ', 'quite '])}{adjective}"
    return f"{'pos' if label else 'neg'} {words} ."


(work / "sent_train.txt").write_text("\n".join(review() for _ in range(1500)) + "\n")
(work / "sent_valid.txt").write_text("\n".join(review() for _ in range(300)) + "\n")
run = quietly(
    classify.train,
    classify.configure(
        data={
            "train": str(work / "sent_train.txt"),
            "valid": str(work / "sent_valid.txt"),
            "batch_size": 32,
        },
        model={"cell": "gru", "hidden_size": 32, "embedding_size": 16, "dropout": 0.0},
        optim={"lr": 0.01},
        trainer=quiet | {"epochs": 6, "out": str(work / "classify")},
    ),
)
predictions = classify.predict(
    run.out_dir, ["the plot was not good .", "the cast was not dull .", "it was great ."]
)
print([(p["text"], p["label"]) for p in predictions])
print(f"validation accuracy {run.report.accuracy:.2f}")
assert run.report.accuracy > 0.9

# %% [markdown]
# ## Aligned many-to-many: named entities with a CRF
#
# One tag per word. A CRF output layer (Lample et al. 2016) scores whole tag sequences:
# $s(y) = \mathrm{start}_{y_0} + \sum_t e_{t, y_t} + \sum_{t>0} A_{y_{t-1}, y_t} + \mathrm{end}_{y_{L-1}}$,
# and decodes the best one by Viterbi. From scratch, by enumerating every one of the
# $K^T$ tag sequences of a short sentence:

# %%
K, T_tags = 4, 5
crf = CRF(K)
with torch.no_grad():
    for p in crf.parameters():
        p.normal_()
emissions = torch.randn(1, T_tags, K)  # [B, T, K]
mask = torch.ones(1, T_tags, dtype=torch.bool)
every = torch.tensor(list(itertools.product(range(K), repeat=T_tags)))  # [K^T, T]
scores = torch.stack([crf.score(emissions, y[None], mask)[0] for y in every])  # [K^T]
assert crf.decode(emissions, mask)[0] == every[scores.argmax()].tolist()  # Viterbi == brute force
torch.testing.assert_close(crf.log_partition(emissions, mask)[0], torch.logsumexp(scores, 0))
print(f"Viterbi == the best of all {len(every)} sequences; forward algorithm == logsumexp of them")

# %% [markdown]
# The tagger itself (a word and character BiLSTM under the CRF), on generated sentences
# in CoNLL columns:

# %%
people = [
    "Ada Lovelace",
    "Alan Turing",
    "Grace Hopper",
    "Edsger Dijkstra",
    "Barbara Liskov",
    "Ken Thompson",
]
places = ["London", "Paris", "New York", "Amsterdam", "Zurich", "Palo Alto"]
templates = [
    "{p} visited {l} .",
    "{p} moved to {l} in 1950 .",
    "In {l} , {p} gave a talk .",
    "{p} met {q} .",
]


def conll(n):
    lines = []
    for _ in range(n):
        sentence = rng.choice(templates)
        for token in sentence.split():
            if token in ("{p}", "{q}", "{l}"):
                kind = "LOC" if token == "{l}" else "PER"
                name = rng.choice(places if kind == "LOC" else people).split()
                lines += [f"{w} {'B' if i == 0 else 'I'}-{kind}" for i, w in enumerate(name)]
            else:
                lines.append(f"{token} O")
        lines.append("")
    return "\n".join(lines) + "\n"


(work / "ner_train.txt").write_text(conll(300))
(work / "ner_valid.txt").write_text(conll(60))
run = quietly(
    tag.train,
    tag.configure(
        data={
            "train": str(work / "ner_train.txt"),
            "valid": str(work / "ner_valid.txt"),
            "scheme": "IOB2",
        },
        model={
            "hidden_size": 24,
            "embedding_size": 16,
            "char_embedding_size": 8,
            "char_hidden_size": 8,
            "dropout": 0.0,
        },
        optim={"lr": 0.01},
        trainer=quiet | {"epochs": 4, "out": str(work / "tag")},
    ),
)
(result,) = tag.predict(run.out_dir, [["Grace", "Hopper", "visited", "Zurich", "."]])
print(result["spans"])
print(f"validation span F1 {run.scores.overall.f1:.2f}")
assert run.scores.overall.f1 > 0.8

# %% [markdown]
# ## Unaligned: dates translated with attention
#
# An encoder reads "5 janvier 2023"; a decoder writes "2023-01-05" one character at a
# time, at each step attending over the encoder's states (Bahdanau et al. 2015):
# $e_j = v^\top \tanh(W_q q + W_k h_j)$, $a = \mathrm{softmax}(e)$ over the real source
# positions, context $c = \sum_j a_j h_j$. From scratch against `Attention`:

# %%
S, M, Hq, A = 7, 6, 5, 4
attention = Attention("bahdanau", Hq, M, A)
states = torch.randn(2, S, M)  # [B, S, M]
source_mask = torch.arange(S)[None] < torch.tensor([[7], [3]])  # [B, S]: the second has 3 steps
query = torch.randn(2, Hq)  # [B, H]
keys = states @ attention.key.weight.T  # [B, S, A]: W_k h_j, once per source
e = (
    torch.tanh((query @ attention.query.weight.T + attention.query.bias)[:, None, :] + keys)
    @ attention.v.weight[0]
)  # [B, S]
a = torch.softmax(e.masked_fill(~source_mask, float("-inf")), dim=1)  # [B, S]
context = (a[:, :, None] * states).sum(1)  # [B, M]
theirs_context, theirs_a = attention(query, Memory(states, keys, source_mask))
torch.testing.assert_close(theirs_a, a)
torch.testing.assert_close(theirs_context, context)
assert (theirs_a[1, 3:] == 0).all() and torch.allclose(theirs_a.sum(1), torch.ones(2))
print("additive attention from scratch == rnnkit's; padding gets weight exactly 0")

# %%
run = quietly(
    seq2seq.train,
    seq2seq.configure(
        data={"dates": 4000, "dates_valid": 200, "dates_test": 0, "batch_size": 64},
        model={"hidden_size": 64, "embedding_size": 16, "attention_size": 32},
        optim={"lr": 0.005},
        trainer=quiet | {"epochs": 4, "out": str(work / "dates")},
    ),
)
results = seq2seq.translate(run.out_dir, ["5 janvier 2023", "March 3, 1999", "12/07/2001"])
for r in results:
    print(r["source"], "->", r["translation"])
report = run.report["valid"]
print({k: round(v, 3) for k, v in report.items()})
well_formed = [re.fullmatch(r"\d{4}-\d{2}-\d{2}", r["translation"]) for r in results]
assert all(well_formed) and report["exact_match"] > 80  # percent

# %% [markdown]
# ## One-to-many: music
#
# Each step is a piano roll frame (which of P pitches sound); the model predicts each
# pitch of the next frame as an independent Bernoulli (frame t predicts frame t + 1), and
# generation feeds its own samples back, starting from silence. The data: chord progressions (I-IV-V-I in random
# keys). The loss is the negative log-likelihood per step, summed over pitches; by hand:


# %%
def progression(key):
    chords = [[0, 4, 7], [5, 9, 12], [7, 11, 14], [0, 4, 7]]
    return [[60 + key + n for n in chord] for chord in chords for _ in range(2)] * 3


chorales = {
    split: [progression(rng.randrange(-5, 6)) for _ in range(n)]
    for split, n in (("train", 60), ("valid", 10))
}
(work / "chords.json").write_text(json.dumps(chorales))
run = quietly(
    music.train,
    music.configure(
        data={"path": str(work / "chords.json"), "batch_size": 8},
        model={"low": 48, "high": 84, "hidden_size": 32},
        optim={"lr": 0.01},
        trainer=quiet | {"epochs": 15, "out": str(work / "music")},
    ),
)
model = music.load(run.out_dir)
rolls = [piano_roll(c, 48, 84) for c in chorales["valid"]]  # each [T, P]
total, steps = 0.0, 0
with torch.no_grad():
    for roll in rolls:
        logits, _ = model(roll[:-1, None])  # [T-1, 1, P]: frame t predicts frame t + 1
        total += float(
            torch.nn.functional.binary_cross_entropy_with_logits(
                logits[:, 0], roll[1:], reduction="sum"
            )
        )
        steps += roll.shape[0] - 1
by_hand = total / steps
print(
    f"NLL per step: by hand {by_hand:.4f}, music.nll {music.nll(model, rolls):.4f}, uniform guess {rolls[0].shape[1] * np.log(2):.1f}"
)
assert abs(by_hand - music.nll(model, rolls)) < 1e-4 * by_hand
_, generated = music.generate_from(run.out_dir, steps=16, num_samples=2)  # [steps, N, P]
chords_played = (generated.sum(2) == 3).float().mean()
print(f"generated: {tuple(generated.shape)}, {chords_played:.0%} of frames are three-note chords")
assert generated.shape == (16, 2, 37) and set(generated.unique().tolist()) <= {0.0, 1.0}

# %% [markdown]
# ## Forecasting
#
# The model reads a window of past values and predicts the next `horizon` steps (the
# yearly sunspot numbers, 1700-2008, which ship with statsmodels). It is scored on a
# held-out tail from every forecast origin against baselines; the naive one (repeat the
# last value) by hand:

# %%
run = quietly(
    forecast.train,
    forecast.configure(
        data={"builtin": "sunspots", "season": 11},
        model={"hidden_size": 32, "window": 24, "horizon": 6},
        optim={"lr": 0.005},
        trainer=quiet | {"epochs": 30, "out": str(work / "forecast")},
    ),
)
print(run.table)
values = builtin("sunspots").values[:, 0]  # [N]
train_end, valid_end = split_points(len(values), 0.1, 0.1)
origins = np.arange(valid_end, len(values) - 6 + 1)
naive_mae = np.mean([np.abs(values[o : o + 6] - values[o - 1]).mean() for o in origins])
scale = np.abs(values[11:train_end] - values[: train_end - 11]).mean()  # seasonal naive, in sample
assert abs(naive_mae - run.scores["naive"]["MAE"]) < 1e-9 * naive_mae
assert abs(naive_mae / scale - run.scores["naive"]["MASE"]) < 1e-9
print(
    f"naive MAE by hand {naive_mae:.3f} == rnnkit's; the GRU's MASE {run.scores['rnnkit gru']['MASE']:.3f}"
)
assert run.scores["rnnkit gru"]["MAE"] < naive_mae
