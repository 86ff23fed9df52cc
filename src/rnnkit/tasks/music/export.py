"""The music model's export adapter: a step model, so a piano roll is sampled outside
Python.

    frame [B, P] float32 (the pitches sounding, 0 or 1), h0 [L, B, H] (and c0 for the
    LSTM) -> logits [B, P] for the next frame, h_n (and c_n)

P = high - low + 1 pitches from MIDI pitch ``low`` (both in the model's metadata). Start
from zero states with the primer's frames (silence, one zero frame, when there is none),
then draw each pitch of the next frame from sigmoid(logits / temperature) and feed the
frame back: ``rnnkit generate music`` does the same (``rnnkit.decoding.bernoulli``).
Dropout is off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from rnnkit.export.onnx import ExportError, Graph, linear, recurrent
from rnnkit.tasks.music.model import MusicModel


class MusicStep(nn.Module):
    """One step of a ``MusicModel`` for ``to_onnx`` (module docstring)."""

    def __init__(self, model: MusicModel, metadata: dict[str, str] | None = None) -> None:
        super().__init__()
        if not isinstance(model, MusicModel):
            raise ExportError(f"MusicStep needs a MusicModel, got {type(model).__name__}")
        self.model = model
        self.metadata = dict(metadata or {})

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("h0", "c0") if self.model.rnn.cell.num_states == 2 else ("h0",)

    def forward(self, frame: Tensor, h0: Tensor, c0: Tensor | None = None) -> tuple[Tensor, ...]:
        """frame [B, P] -> (logits [B, P], h_n[, c_n]), each state [L, B, H]."""
        state: Any = h0 if c0 is None else (h0, c0)
        logits, state = self.model(frame[None], state)  # [1, B, P]
        states = state if isinstance(state, tuple) else (state,)
        return (logits[0], *states)

    def onnx_graph(self, example: Any = None) -> Graph:
        if example is not None:
            raise ExportError("the music model's step model takes no example (pass None)")
        m, c = self.model, self.model.config
        P, L, sizes = c.high - c.low + 1, c.num_layers, m.rnn.state_sizes
        g = Graph("rnnkit_music_step")
        frame = g.input("frame", "float", ["B", P])
        state = [
            g.input(name, "float", [L, "B", size])
            for name, size in zip(self.state_names, sizes, strict=True)
        ]
        x = g.op("Unsqueeze", frame, g.ints([0], "axes"), hint="frame_t")  # [1, B, P]
        out, finals = recurrent(g, x, m.rnn, state=state)  # [1, B, H]
        top = g.op("Squeeze", out, g.ints([0], "axes"), hint="top")  # [B, H]
        g.output(linear(g, top, m.output, rank=2), "logits", "float", ["B", P])
        for value, name, size in zip(finals, ("h_n", "c_n"), sizes, strict=False):
            g.output(value, name, "float", [L, "B", size])
        g.metadata |= {
            "rnnkit.task": "music",
            "rnnkit.model": "step",
            "rnnkit.cell": c.cell,
            "rnnkit.low": str(c.low),
            "rnnkit.high": str(c.high),
        } | self.metadata
        return g


def adapter(model: nn.Module) -> MusicStep:
    if not isinstance(model, MusicModel):
        raise ExportError(f"expected a MusicModel, got {type(model).__name__}")
    return MusicStep(model)


def from_run(path: str | Path) -> MusicStep:
    """The step model of a trained run's ``best`` checkpoint (or a checkpoint folder)."""
    from rnnkit.tasks.music import api

    return MusicStep(api.load(path).eval())
