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
# # 7. What the units learned
#
# Karpathy, Johnson and Fei-Fei ("Visualizing and Understanding Recurrent Networks",
# 2015) coloured text by one LSTM cell's value and found cells that track quotes,
# brackets and line position; LSTMVis (Strobelt et al. 2018) ranks units by how well they
# follow a pattern the user selects. rnnkit's viewer (`rnnkit viz`, `rnnkit.tasks.lm.viz`)
# does both as one HTML page.
#
# This chapter trains a tiny character LSTM on Python's documentation for a few
# seconds, reads its units from scratch (the LSTM equations of chapter 1, step by step),
# checks the viewer's data against them, ranks units by variance and by correlation with
# "inside double quotes", and shows the page. Shapes: T tokens, H units.

# %%
import base64
import html
import io
import re
import tempfile
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch
from IPython.display import HTML

from rnnkit.diagnostics import ranking
from rnnkit.tasks import lm
from rnnkit.tasks.lm import viz
from rnnkit.tasks.lm.api import default_corpus
from rnnkit.tasks.lm.config import LMConfig
from rnnkit.tasks.lm.model import LanguageModel

work = Path(tempfile.mkdtemp())
corpus = default_corpus()
(work / "train.txt").write_text(corpus[:200_000], encoding="utf-8")
settings = lm.configure(
    text=str(work / "train.txt"),
    model={"cell": "lstm", "num_layers": 1, "hidden_size": 64, "embedding_size": 32},
    data={"tokenizer": "char", "batch_size": 32, "bptt": 64},
    optim={"lr": 0.005},
    trainer={"progress": False, "out": str(work / "run"), "max_minutes": None, "epochs": 4},
)
log = io.StringIO()
with redirect_stdout(log), redirect_stderr(log):
    run = lm.train(settings)
print(log.getvalue().strip().splitlines()[-1])
model, tokenizer = run.model.eval(), run.tokenizer

# held-out text with quoted strings in it
start = corpus.index('"', 300_000)
text = corpus[start - 200 : start + 400]
data = viz.visualise(model, tokenizer, text, signal="c", pattern='"[^"\\n]*"', rank_by="pattern")
T = len(data["tokens"]["ids"])
print(f"{T} tokens; signals of layer 0: {list(data['layers'][0]['signals'])}")

# %% [markdown]
# ## The units, from scratch
#
# Replay the LSTM over the text one character at a time with its own weights
# ($c' = f c + i g$, $h' = o \tanh c'$) and compare with the viewer's values, which are
# stored as one uint8 code per unit and step over each unit's own range (so they agree to
# half a quantisation step).

# %%
E = model.embedding.weight.detach().double()  # [V, D]
W, U = model.rnn.weight_ih_l0.detach().double(), model.rnn.weight_hh_l0.detach().double()
b = (model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0).detach().double()
H = U.shape[1]
h, c = torch.zeros(H, dtype=torch.float64), torch.zeros(H, dtype=torch.float64)
scratch = {"h": [], "c": [], "i": [], "f": [], "g": [], "o": []}
for token in data["tokens"]["ids"]:
    a = W @ E[token] + U @ h + b  # [4H]
    i, f, g, o = (
        a[:H].sigmoid(),
        a[H : 2 * H].sigmoid(),
        a[2 * H : 3 * H].tanh(),
        a[3 * H :].sigmoid(),
    )
    c = f * c + i * g
    h = o * c.tanh()
    for name, value in zip("hcifgo", (h, c, i, f, g, o), strict=True):
        scratch[name].append(value.numpy())
scratch = {name: np.stack(values) for name, values in scratch.items()}  # each [T, H]


def dequantised(signal, data=data):
    """The viewer's values of a signal [T, H], decoded from its uint8 codes."""
    s = data["layers"][0]["signals"][signal]
    q = np.frombuffer(base64.b64decode(s["q"]), dtype=np.uint8).reshape(s["size"], T)
    return (np.array(s["lo"])[:, None] + q * np.array(s["scale"])[:, None]).T


for signal, values in scratch.items():
    half_step = np.array(data["layers"][0]["signals"][signal]["scale"]) / 2
    assert np.all(np.abs(dequantised(signal) - values) <= half_step + 1e-5), signal
print("every signal: from scratch == the viewer's data, within half a quantisation step")

# %% [markdown]
# ## Ranking units
#
# By variance over the text (the units that move most), and by Pearson's r with the
# pattern's indicator (1 for a character inside a double-quoted string, else 0): a unit
# with a large |r| switches on (or off) inside quotes.

# %%
inside = np.zeros(T)
for m in re.finditer(r'"[^"\n]*"', text[:T]):
    inside[m.start() : m.end()] = 1.0  # char tokens: token t is character t
assert 0 < inside.sum() < T

c_viewer = dequantised("c")
variance = c_viewer.var(axis=0)  # [H]
np.testing.assert_allclose(
    data["layers"][0]["signals"]["c"]["variance"], variance, rtol=1e-9, atol=1e-12
)
r = np.array([np.corrcoef(c_viewer[:, u], inside)[0, 1] for u in range(H)])  # [H]
np.testing.assert_allclose(ranking.pattern_correlation(c_viewer, inside), r, atol=1e-9)
by_r = ranking.rank(r, by_magnitude=True)
print("highest variance:", ranking.rank(variance)[:5].tolist())
print("best |r| with 'inside quotes':", [(int(u), round(float(r[u]), 2)) for u in by_r[:5]])

# the trained units follow the quotes better than an untrained model's do
torch.manual_seed(0)
untrained = LanguageModel(
    LMConfig(cell="lstm", num_layers=1, hidden_size=64, embedding_size=32), tokenizer.vocab_size
)
before = viz.visualise(untrained, tokenizer, text, signal="c")
c_before = dequantised("c", before)
r_before = np.abs(ranking.pattern_correlation(c_before, inside)).max()
print(f"best |r|: trained {abs(r[by_r[0]]):.2f}, untrained {r_before:.2f}")
assert abs(r[by_r[0]]) > r_before

# %% [markdown]
# ## The text coloured by the best unit, and the page
#
# Blue low, red high: the cell that best follows the quotes, over the text.


# %%
def coloured(values, tokens):
    """Each token on a background from blue (low) through white to red (high)."""
    spans = []
    for v, token in zip(values / (np.abs(values).max() or 1.0), tokens, strict=True):
        fade = int(255 * (1 - abs(v)))  # the other two channels
        rgb = (255, fade, fade) if v > 0 else (fade, fade, 255)
        spans.append(f'<span style="background: rgb{rgb}">{html.escape(token)}</span>')
    return '<pre style="line-height: 1.4">' + "".join(spans) + "</pre>"


best = int(by_r[0])
HTML(coloured(c_viewer[:, best], list(text[:T])))

# %% [markdown]
# The viewer is one self-contained HTML file (inline script, nothing fetched): pick any
# unit, type a pattern, rank, and hover a character for the model's next guesses. It is
# written by `viz.write` (or `rnnkit viz RUN --text FILE --out viz.html`); here it is
# embedded below.

# %%
page = viz.write(data, work / "viz.html")
source = page.read_text(encoding="utf-8")
assert "<script" in source and str(data["model"]["hidden_size"]) in source
with warnings.catch_warnings():
    # IPython suggests IFrame, which needs a URL; srcdoc carries the page itself
    warnings.simplefilter("ignore", UserWarning)
    frame = HTML(
        f'<iframe srcdoc="{html.escape(source)}" style="width: 100%; height: 640px"></iframe>'
    )
frame
