"""Polyphonic music as piano rolls, and standard MIDI files.

A chorale is a list of time steps, each a list of sounding MIDI pitches (the JSB Chorales
of Boulanger-Lewandowski et al. 2012, quarter-note grid). A piano roll is a binary
[T, P] tensor over the pitches ``low .. high`` (P = high - low + 1; the 88 piano keys,
21..108, by default, as in the literature's 88-unit models).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from rnnkit.common.io import atomic_path
from rnnkit.data.text import DataError, read_text

PIANO = (21, 108)
Chorale = list[list[int]]


def load_chorales(path: str | os.PathLike[str]) -> dict[str, list[Chorale]]:
    """{split name: chorales} from a JSON file of that shape; errors name the file and item."""
    p = Path(path)
    try:
        data = json.loads(read_text(p))
    except json.JSONDecodeError as err:
        raise DataError(f"{p}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{p}: expected an object of splits, e.g. {{'train': [...]}}")
    for split, chorales in data.items():
        if not isinstance(chorales, list):
            raise DataError(f"{p}: split {split!r} is not a list of chorales")
        for n, chorale in enumerate(chorales):
            if not is_chorale(chorale):
                raise DataError(f"{p}: {split}[{n}] is not a list of lists of MIDI pitches")
    return data


def is_chorale(data: object) -> bool:
    """Whether ``data`` is a chorale: a list of steps, each a list of integer MIDI pitches."""
    return isinstance(data, list) and all(
        isinstance(step, list) and all(type(q) is int for q in step) for step in data
    )


def read_primer(path: str | os.PathLike[str]) -> Chorale:
    """A primer file: one chorale as JSON, e.g. ``[[60, 64, 67], [62]]``."""
    p = Path(path)
    try:
        data = json.loads(read_text(p))
    except json.JSONDecodeError as err:
        raise DataError(f"{p}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not is_chorale(data) or not data:
        raise DataError(f"{p}: a primer is a non-empty list of steps, each a list of MIDI pitches")
    return data


def piano_roll(chorale: Chorale, low: int = PIANO[0], high: int = PIANO[1]) -> Tensor:
    """[T, P] float32 with 1 where a pitch sounds; a pitch outside low..high is an error."""
    roll = torch.zeros(len(chorale), high - low + 1)
    for t, step in enumerate(chorale):
        for pitch in step:
            if not low <= pitch <= high:
                raise DataError(f"pitch {pitch} at step {t} is outside the range {low}..{high}")
            roll[t, pitch - low] = 1.0
    return roll


def chorale_of(roll: Tensor, low: int = PIANO[0]) -> Chorale:
    """The inverse of ``piano_roll``."""
    return [[low + int(i) for i in torch.nonzero(step > 0.5).flatten()] for step in roll]


def write_midi(
    chorale: Sequence[Sequence[int]],
    path: str | os.PathLike[str],
    *,
    step_beats: float = 1.0,
    tempo_bpm: float = 90.0,
    velocity: int = 80,
) -> None:
    """A standard MIDI file (type 0): each step lasts ``step_beats`` quarter notes; a pitch
    held over consecutive steps is one note. Written atomically (``rnnkit.common.io``)."""
    import mido

    ticks = 480
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo_bpm), time=0))
    sounding: set[int] = set()
    wait = 0
    step_ticks = round(ticks * step_beats)
    for step in [*chorale, []]:
        now = set(step)
        for pitch in sorted(sounding - now):
            track.append(mido.Message("note_off", note=pitch, velocity=0, time=wait))
            wait = 0
        for pitch in sorted(now - sounding):
            track.append(mido.Message("note_on", note=pitch, velocity=velocity, time=wait))
            wait = 0
        sounding = now
        wait += step_ticks
    track.append(mido.MetaMessage("end_of_track", time=0))
    with atomic_path(path) as tmp:
        mido.MidiFile(type=0, ticks_per_beat=ticks, tracks=[track]).save(tmp)


def read_midi(path: str | os.PathLike[str], *, step_beats: float = 1.0) -> Chorale:
    """The pitches sounding at each step of a MIDI file, on a ``step_beats`` grid."""
    import mido

    midi = mido.MidiFile(path)
    step_ticks = round(midi.ticks_per_beat * step_beats)
    events: list[tuple[int, int, bool]] = []
    for track in midi.tracks:
        now = 0
        for message in track:
            now += message.time
            if message.type in ("note_on", "note_off"):
                on = message.type == "note_on" and message.velocity > 0
                events.append((now, message.note, on))
    end = max((t for t, _, _ in events), default=0)
    steps: Chorale = []
    sounding: set[int] = set()
    events.sort(key=lambda e: (e[0], e[2]))
    i = 0
    for tick in range(0, end, step_ticks):
        while i < len(events) and events[i][0] <= tick:
            _, note, on = events[i]
            (sounding.add if on else sounding.discard)(note)
            i += 1
        steps.append(sorted(sounding))
    return steps
