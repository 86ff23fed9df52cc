"""Polyphonic music modelling (Boulanger-Lewandowski et al. 2012; Chung et al. 2014,
section 4.1): an RNN reads the piano roll and predicts each pitch of the next step
independently.

    h_t = RNN(x_t, h_{t-1})                x_t in {0, 1}^P, the pitches sounding at t
    p(x_{t+1, k} = 1) = sigmoid(W h_t + b)_k

The loss is the negative log-likelihood of the next step, summed over the P pitches and
averaged over time steps (the "NLL per time step" of the literature). Shapes: rolls
[T, B, P] (time-major), logits [T, B, P].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.decoding.bernoulli import sample_bernoulli
from rnnkit.nn.factory import drops_sequences, recurrent_layer, variant_fields
from rnnkit.tasks.music.config import MusicConfig
from rnnkit.train.pretrained import Adapter, PretrainedMixin


class MusicModel(nn.Module, PretrainedMixin):
    """``save_pretrained(dir)`` / ``MusicModel.from_pretrained(dir)``: a folder in the Hub
    layout (``rnnkit.train.pretrained``)."""

    @classmethod
    def pretrained_adapter(cls) -> Adapter:
        from rnnkit.tasks.music.api import PRETRAINED  # the api imports this module

        return PRETRAINED

    def __init__(self, config: MusicConfig) -> None:
        super().__init__()
        if config.high < config.low:
            raise ValueError(f"model.high ({config.high}) is below model.low ({config.low})")
        self.config = config
        pitches = config.high - config.low + 1
        self.rnn = recurrent_layer(
            config.cell,
            pitches,
            config.hidden_size,
            config.num_layers,
            dropout=config.dropout,
            variants=variant_fields(config),
        )
        # before the output; with locked_dropout the stack drops its output per sequence
        self.dropout = nn.Dropout(config.dropout if drops_sequences(config) else 0.0)
        self.output = nn.Linear(self.rnn.output_size, pitches)

    def forward(self, rolls: Tensor, state=None, lengths: Tensor | None = None):
        """rolls [T, B, P] -> (logits [T, B, P] for the next step, final state)."""
        states, final = self.rnn(rolls, state, lengths=lengths)
        return self.output(self.dropout(states)), final

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def nll_per_step(logits: Tensor, targets: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """(summed NLL over masked steps and all pitches, number of steps); mask [T, B]."""
    per_pitch = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    return (per_pitch.sum(2) * mask).sum(), int(mask.sum())


@torch.no_grad()
def generate(
    model: MusicModel,
    steps: int,
    primer: Tensor | None = None,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    seed: int | None = 0,
) -> Tensor:
    """Sample piano rolls [steps, num_samples, P], each pitch a Bernoulli draw from its
    sigmoid (logits divided by ``temperature``), fed back as the next input
    (``rnnkit.decoding.bernoulli``). ``primer`` [T0, P] is played first; with none the
    model starts from silence."""
    if steps < 1 or num_samples < 1 or temperature <= 0:
        raise ValueError("steps and num_samples must be >= 1 and temperature > 0")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    P = model.config.high - model.config.low + 1
    start = torch.zeros(1, P) if primer is None else primer
    if start.dim() != 2 or start.shape[1] != P:
        raise ValueError(f"primer must be [T, {P}], got shape {tuple(start.shape)}")
    start = start[:, None].expand(-1, num_samples, -1).contiguous()  # [T0, N, P]
    return sample_bernoulli(model, start, steps, temperature=temperature, generator=generator)
