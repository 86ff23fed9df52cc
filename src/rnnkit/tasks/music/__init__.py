"""Polyphonic music: a recurrent model of piano rolls with independent Bernoulli notes,
trained on chorales, sampled to MIDI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rnnkit.common.lazy import lazy_exports

if TYPE_CHECKING:
    from rnnkit.tasks.music.api import (
        MusicRun,
        configure,
        evaluate_file,
        generate_from,
        load,
        train,
    )
    from rnnkit.tasks.music.config import MusicConfig, MusicDataConfig, MusicSettings, defaults
    from rnnkit.tasks.music.model import MusicModel

__all__ = [
    "MusicConfig",
    "MusicDataConfig",
    "MusicModel",
    "MusicRun",
    "MusicSettings",
    "configure",
    "defaults",
    "evaluate_file",
    "generate_from",
    "load",
    "train",
]

# Loaded on first use: ``rnnkit.tasks.music.config`` must import without torch.
__getattr__ = lazy_exports(
    __name__,
    {
        "MusicConfig": "rnnkit.tasks.music.config",
        "MusicDataConfig": "rnnkit.tasks.music.config",
        "MusicModel": "rnnkit.tasks.music.model",
        "MusicRun": "rnnkit.tasks.music.api",
        "MusicSettings": "rnnkit.tasks.music.config",
        "configure": "rnnkit.tasks.music.api",
        "defaults": "rnnkit.tasks.music.config",
        "evaluate_file": "rnnkit.tasks.music.api",
        "generate_from": "rnnkit.tasks.music.api",
        "load": "rnnkit.tasks.music.api",
        "train": "rnnkit.tasks.music.api",
    },
)
