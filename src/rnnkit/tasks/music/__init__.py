"""Polyphonic music: a recurrent model of piano rolls with independent Bernoulli notes,
trained on chorales, sampled to MIDI."""

from rnnkit.tasks.music.api import (
    MusicDataConfig,
    MusicRun,
    configure,
    defaults,
    generate_from,
    load,
    train,
)
from rnnkit.tasks.music.model import MusicConfig, MusicModel

__all__ = [
    "MusicConfig",
    "MusicDataConfig",
    "MusicModel",
    "MusicRun",
    "configure",
    "defaults",
    "generate_from",
    "load",
    "train",
]
