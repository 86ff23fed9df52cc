"""Rank a signal's units: by how much they vary, how saturated they are, and how well they
follow a pattern in the text (LSTMVis's hypothesis, Strobelt et al. 2018, sec. 4).

Over the T steps of one sequence, for unit u with values v[t] (values [T, H]):

    variance      var_u = mean_t (v[t] - mean v)^2
    saturation    sat_u = share of steps with v[t] < LOW or v[t] > HIGH     (sigmoid gates)
                          share of steps with |v[t]| > TANH_EDGE            (other signals)
    pattern       r_u = Pearson correlation of v with m, the pattern's 0/1 indicator per
                        token: sum (v - mean v)(m - mean m) / sqrt(sum (v - mean v)^2
                        sum (m - mean m)^2); 0 where either is constant

A sigmoid gate is saturated outside [0.1, 0.9] (``gates.LOW``, ``gates.HIGH``: a slope
below 0.09, a nearly fixed switch). Any other signal is saturated past |v| = 0.9, tanh's
flat region (slope 1 - v^2 < 0.19); for an unbounded signal (the LSTM's c, a ReLU RNN's
h) that reads as "beyond +-0.9". Units are ranked by score, highest first (by |r| for
the pattern: a unit that is low inside the pattern follows it as well), ties by unit
index; the viewer's page computes the same numbers from the same quantised values.
"""

from __future__ import annotations

import numpy as np

from rnnkit.diagnostics.gates import HIGH, LOW

TANH_EDGE = 0.9
"""|v| above this is saturated for a signal that is not a sigmoid gate."""
RANKINGS = ("variance", "saturation", "pattern")


def _matrix(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0:
        raise ValueError(f"values must be [T, H] with T >= 1, got shape {v.shape}")
    return v


def variance(values: np.ndarray) -> np.ndarray:
    """values [T, H] -> [H]: each unit's variance over the steps (population, 1/T)."""
    return _matrix(values).var(axis=0)


def saturation(values: np.ndarray, gate: bool) -> np.ndarray:
    """values [T, H] -> [H]: each unit's share of saturated steps (``gate``: a sigmoid
    gate, saturated outside [LOW, HIGH]; else past |v| = TANH_EDGE)."""
    v = _matrix(values)
    hit = (v < LOW) | (v > HIGH) if gate else np.abs(v) > TANH_EDGE
    return hit.mean(axis=0)


def pattern_correlation(values: np.ndarray, indicator: np.ndarray) -> np.ndarray:
    """values [T, H] and a 0/1 indicator [T] -> [H]: Pearson's r of each unit with the
    indicator, 0 where the unit or the indicator is constant."""
    v = _matrix(values)
    m = np.asarray(indicator, dtype=np.float64)
    if m.shape != (v.shape[0],):
        raise ValueError(f"indicator must have shape ({v.shape[0]},), got {m.shape}")
    dv = v - v.mean(axis=0)  # [T, H]
    dm = m - m.mean()  # [T]
    denominator = np.sqrt((dv * dv).sum(axis=0) * (dm * dm).sum())  # [H]
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, (dv * dm[:, None]).sum(axis=0) / safe, 0.0)


def rank(scores: np.ndarray, by_magnitude: bool = False) -> np.ndarray:
    """Unit indices, highest score first (``by_magnitude``: highest |score|), ties by
    index."""
    s = np.abs(scores) if by_magnitude else np.asarray(scores, dtype=np.float64)
    return np.lexsort((np.arange(len(s)), -s))


def unit_indicator(
    spans: list[tuple[int, int]], matches: list[tuple[int, int]], size: int
) -> np.ndarray:
    """Which tokens a pattern covers: 1 where a token's span [start, end) shares a unit
    with a match [a, b) (an empty match covers the unit at a), else 0. Offsets in one
    unit (the viewer: UTF-16), ``size`` the text's length in it."""
    marked = np.zeros(size + 1, dtype=bool)
    for a, b in matches:
        marked[a : max(b, a + 1)] = True
    return np.array([marked[s:e].any() for s, e in spans], dtype=np.float64)
