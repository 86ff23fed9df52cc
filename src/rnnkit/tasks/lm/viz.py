"""What a trained language model's units do on a text, as data and as a page: what
``rnnkit viz RUN --text FILE --out viz.html`` writes (Karpathy, Johnson & Fei-Fei 2015,
"Visualizing and Understanding Recurrent Networks"; Strobelt et al.'s LSTMVis).

The model reads the text's first ``max_tokens`` tokens as one sequence from zero states.
At token t (it has read tokens 0..t) the data holds every layer's signals (h, c for the
LSTM, the cell's gates; ``rnnkit.diagnostics.units``, replayed on the composite path) as
uint8 codes per unit, and the model's prediction of token t+1: its top five tokens with
their probabilities, the true next token's probability and the loss -log p there (none
at the last token). Tokens carry [start, end) offsets in UTF-16 units
(``rnnkit.data.spans``), as the page's JavaScript regular expressions count them.

Bounds: ``max_tokens`` cuts the text (or refuses it with ``strict``); ``max_megabytes``
refuses data whose codes would exceed it (fewer tokens or fewer signals fit).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rnnkit.common.io import atomic_write_text, check_new_file
from rnnkit.data.spans import token_points, utf16_offsets
from rnnkit.data.tokenizers import Tokenizer
from rnnkit.diagnostics import ranking
from rnnkit.diagnostics.page import embedded_json, render
from rnnkit.diagnostics.units import quantise, unit_signals
from rnnkit.tasks.lm.model import LanguageModel

FORMAT, VERSION = "rnnkit.viz", 1
TOP_K = 5
RANK_ROWS = 20
"""The page's ranking table shows this many units."""
FORMATS = ("html", "json")


@dataclass(frozen=True)
class VizLimits:
    """The bounds of one page: ``max_tokens`` of the text (cut, or an error with
    ``strict``) and ``max_megabytes`` of quantised codes (an error past it)."""

    max_tokens: int = 2000
    max_megabytes: float = 32.0
    strict: bool = False

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_tokens, bool)
            or not isinstance(self.max_tokens, int)
            or self.max_tokens < 1
        ):
            raise ValueError(f"--max-tokens must be a positive integer, got {self.max_tokens!r}")
        if not self.max_megabytes > 0:
            raise ValueError(f"--max-megabytes must be > 0, got {self.max_megabytes!r}")


def _label(text: str) -> str:
    """A token as the page shows it: whitespace made visible."""
    return text.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣") or "∅"


def _check_choice(what: str, value: int | str, choices: Sequence[int | str], flag: str) -> None:
    if value not in choices:
        shown = (
            f"[0, {len(choices) - 1}]" if isinstance(value, int) else ", ".join(map(str, choices))
        )
        raise ValueError(f"{flag} {value!r} is not {what}; expected {shown}")


def visualise(
    model: LanguageModel,
    tokenizer: Tokenizer,
    text: str,
    *,
    limits: VizLimits = VizLimits(),
    layer: int = 0,
    signal: str = "h",
    unit: int = 0,
    pattern: str = "",
    rank_by: str = "variance",
    title: str = "",
) -> dict[str, Any]:
    """The viewer's data for ``model`` on ``text`` (the JSON ``--format json`` writes):
    tokens, predictions, each layer's quantised signals with their variance and
    saturation, and the limits; the model is put in eval mode. ``layer``, ``signal``,
    ``unit``, ``pattern`` and ``rank_by`` (a ranking of ``ranking.RANKINGS``) are what the
    page shows first (checked against the model)."""
    _check_choice("a ranking", rank_by, ranking.RANKINGS, "--rank-by")
    if not text:
        raise ValueError("the text is empty; the viewer needs at least one token")
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError(
            f"the text holds no {tokenizer.kind} tokens; the viewer needs at least one"
        )
    total = len(ids)
    if total > limits.max_tokens and limits.strict:
        raise ValueError(
            f"the text has {total} {tokenizer.kind} tokens, over --max-tokens "
            f"{limits.max_tokens} (without --strict it is cut to the first {limits.max_tokens})"
        )
    points = token_points(tokenizer, text, ids)[: limits.max_tokens]  # code points
    ids = ids[: limits.max_tokens]
    offsets = utf16_offsets(text)
    shown = text[: points[-1][1]]  # the text ends where its last shown token does
    T = len(ids)

    model = model.eval()
    rnn = model.rnn
    _check_choice("a layer of this model", layer, range(rnn.num_layers), "--layer")
    device = model.decoder.weight.device
    inputs = torch.tensor(ids, dtype=torch.int64, device=device)[:, None]  # [T, 1]
    with torch.no_grad():
        logits, _ = model(inputs)  # [T, 1, V]
        logp = F.log_softmax(logits[:, 0].double(), dim=-1)  # [T, V]
        x = (
            model.embedding(inputs)
            if model.embedding is not None
            else F.one_hot(inputs, model.vocab_size).to(model.decoder.weight.dtype)
        )  # [T, 1, D], the stack's input (no dropout in eval)
    per_layer = unit_signals(rnn, x)
    names = list(per_layer[0].values)
    _check_choice("a signal of this model", signal, names, "--signal")
    size = per_layer[layer].values[signal].shape[1]
    _check_choice(f"a unit of layer {layer}'s {signal} (size {size})", unit, range(size), "--unit")
    megabytes = sum(v.size for s in per_layer for v in s.values.values()) / 1e6
    if megabytes > limits.max_megabytes:
        raise ValueError(
            f"{T} tokens x {len(per_layer)} layers x signals {names} need {megabytes:.1f} MB of "
            f"codes, over --max-megabytes {limits.max_megabytes:g}; lower --max-tokens"
        )

    top_p, top_ids = logp.exp().topk(min(TOP_K, model.vocab_size), dim=-1)  # [T, K]
    targets = torch.tensor(ids[1:], dtype=torch.int64, device=device)
    true_logp = logp[:-1].gather(1, targets[:, None])[:, 0].tolist()  # [T - 1]
    next_prob: list[float | None] = [float(f"{math.exp(v):.6g}") for v in true_logp]
    loss: list[float | None] = [float(f"{-v:.6g}") for v in true_logp]
    shown_ids = sorted(set(top_ids.flatten().tolist()) | set(ids))
    vocab = {str(i): _label(tokenizer.token_text(i)) for i in shown_ids}

    layers = []
    max_error = 0.0
    for signals in per_layer:
        entry: dict[str, Any] = {}
        for name, values in signals.values.items():
            gate = name in signals.gates
            q = quantise(values)
            deq = q.values()
            reach = 1.0 if gate else max(1.0, float(np.abs(values).max()))
            max_error = max(max_error, float(q.scale.max()) / 2)
            entry[name] = {
                "gate": gate,
                "size": int(values.shape[1]),
                "range": [0.0, 1.0] if gate else [-reach, reach],
                "lo": q.lo.tolist(),
                "scale": q.scale.tolist(),
                "q": base64.b64encode(q.q.tobytes()).decode("ascii"),
                "variance": ranking.variance(deq).tolist(),
                "saturation": ranking.saturation(deq, gate).tolist(),
            }
        layers.append({"signals": entry})

    return {
        "format": FORMAT,
        "version": VERSION,
        "title": title or default_title(model),
        "model": {
            "cell": rnn.cell.label,
            "layers": rnn.num_layers,
            "hidden_size": rnn.hidden_size,
            "tokenizer": tokenizer.kind,
            "vocab_size": model.vocab_size,
        },
        "text": shown,
        "offsets": "utf-16",
        "tokens": {
            "ids": ids,
            "start": [offsets[a] for a, _ in points],
            "end": [offsets[b] for _, b in points],
            "text": [_label(text[a:b]) for a, b in points],
        },
        "predictions": {
            "top_ids": top_ids.tolist(),
            "top_probs": [[float(f"{p:.6g}") for p in row] for row in top_p.tolist()],
            "next_prob": [*next_prob, None],
            "loss": [*loss, None],
            "mean_loss": float(np.mean([-v for v in true_logp])) if true_logp else None,
        },
        "vocab": vocab,
        "layers": layers,
        "quantisation": {
            "codes": "uint8, base64, unit-major [size, T]: v = lo[u] + q[u, t] * scale[u]",
            "max_error": max_error,
        },
        "saturation": {"low": ranking.LOW, "high": ranking.HIGH, "edge": ranking.TANH_EDGE},
        "limits": {
            "max_tokens": limits.max_tokens,
            "text_tokens": total,
            "shown_tokens": T,
            "cut": T < total,
            "max_megabytes": limits.max_megabytes,
            "rank_rows": RANK_ROWS,
        },
        "initial": {
            "layer": layer,
            "signal": signal,
            "unit": unit,
            "pattern": pattern,
            "ranking": rank_by,
        },
    }


def default_title(model: LanguageModel) -> str:
    rnn = model.rnn
    return f"{rnn.num_layers}x{rnn.hidden_size} {rnn.cell.label} language model"


def describe(data: dict[str, Any]) -> tuple[str, str]:
    """The page's two plain lines: what it shows, and its limits."""
    m, lim, p = data["model"], data["limits"], data["predictions"]
    loss = "" if p["mean_loss"] is None else f"; mean loss {p['mean_loss']:.3f} nats per token"
    about = (
        f"{m['tokenizer']} tokens, vocabulary {m['vocab_size']}{loss}. Colour: the chosen "
        "unit's value after reading each token (blue low, white middle, red high). Hover a "
        "token for the model's next-token guesses. A token is inside the pattern when any "
        "of its characters is inside a match."
    )
    cut = (
        f"the first {lim['shown_tokens']} of the text's {lim['text_tokens']} tokens"
        if lim["cut"]
        else f"all {lim['shown_tokens']} tokens of the text"
    )
    limits = (
        f"Limits: {cut} (--max-tokens {lim['max_tokens']}); values stored as uint8 codes per "
        f"unit over its own range (largest error {data['quantisation']['max_error']:.2g}); "
        f"at most {lim['max_megabytes']:g} MB of codes (--max-megabytes); the ranking lists "
        f"the top {lim['rank_rows']} units."
    )
    return about, limits


def write(
    data: dict[str, Any],
    out: str | Path,
    fmt: str = "html",
    force: bool = False,
    flag: str = "--out",
) -> Path:
    """Write the page (``fmt`` "html") or the data (``"json"``) to ``out`` atomically;
    an existing file only with ``force``, never a folder (``flag`` names ``out`` in the
    error)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    target = check_new_file(out, flag, force)
    if fmt == "json":
        return atomic_write_text(target, embedded_json(data) + "\n")
    about, limits = describe(data)
    return atomic_write_text(target, render(data, about, limits))
