"""Synthetic problem generators: deterministic under a seed, and their targets right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.synthetic import (
    AddingProblem,
    AgreementProblem,
    CopyProblem,
    adding_sequences,
    agreement_sequences,
    copy_sequences,
    memoryless_baseline,
)
from rnnkit.synthetic.agreement import INDEX, NOUNS, VERBS, decode
from rnnkit.synthetic.copy import BLANK, DELIMITER


@pytest.mark.parametrize(
    "generate",
    [
        lambda seed: adding_sequences(seed, 4, 20),
        lambda seed: copy_sequences(seed, 4, 7),
        lambda seed: agreement_sequences(seed, 4, 3),
        lambda seed: agreement_sequences(seed, 4, 3, full=True),
    ],
    ids=["adding", "copy", "agreement", "agreement-full"],
)
def test_generators_are_deterministic_under_a_seed(generate):
    first, again, other = generate(7), generate(7), generate(8)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        a.shape != c.shape or not np.array_equal(a, c) for a, c in zip(first, other, strict=True)
    )
    # a Generator and its seed give the same batch
    from_rng = generate(np.random.default_rng(7))
    for a, b in zip(first, from_rng, strict=True):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), T=st.integers(10, 120))
def test_adding_sequences_follow_hochreiter_schmidhuber(seed, T):
    x, lengths, target = adding_sequences(seed, 8, T)
    assert x.shape == (T + T // 10, 8, 2)
    for b in range(8):
        L = int(lengths[b])
        assert T <= L <= T + T // 10
        values, markers = x[:L, b, 0], x[:L, b, 1]
        assert np.all(x[L:, b] == 0)
        assert np.all((-1 <= values) & (values <= 1))
        marked = np.flatnonzero(markers == 1.0)
        assert len(marked) == 2
        # one mark among the first ten pairs, the other among the first T/2 - 1 pairs
        # still unmarked after it (when both lie in the first ten, either may be first)
        assert any(
            first < 10 and second in [j for j in range(L) if j != first][: T // 2 - 1]
            for first, second in (marked, marked[::-1])
        )
        others = np.setdiff1d(np.arange(L), marked)
        ends = [j for j in (0, L - 1) if j not in marked]
        assert np.all(markers[ends] == -1.0)
        assert np.all(markers[np.setdiff1d(others, ends)] == 0.0)
        if 0 in marked:
            assert values[0] == 0.0
        assert math.isclose(target[b], 0.5 + values[marked].sum() / 4.0)


def test_adding_hand_checked_and_scored():
    x, lengths, target = adding_sequences(0, 2, 20)
    # seed 0, first sequence (read off once, then checked by hand against the rules):
    # marks at pairs 5 and 6, the first and last pairs are -1, target 0.5 + (X1 + X2) / 4
    assert list(np.flatnonzero(x[:, 0, 1] == 1)) == [5, 6]
    assert x[0, 0, 1] == -1 and x[int(lengths[0]) - 1, 0, 1] == -1
    assert math.isclose(target[0], 0.5 + (x[5, 0, 0] + x[6, 0, 0]) / 4)
    problem = AddingProblem(20)
    batch = problem.sample(0, 4)
    assert problem.metrics(batch.target[:, None] + 0.039, batch)["accuracy"] == 1.0
    assert problem.metrics(batch.target[:, None] - 0.041, batch)["accuracy"] == 0.0
    full = problem.sample_full(0, 3)
    assert full.lengths is None and full.x.shape == (20, 3, 2)


def test_copy_sequences_layout():
    inputs, targets = copy_sequences(3, 5, 4)
    assert inputs.shape == targets.shape == (24, 5)
    symbols = inputs[:10]
    assert np.all((1 <= symbols) & (symbols <= 8))
    assert np.all(inputs[10:13] == BLANK)  # T - 1 = 3 blanks
    assert np.all(inputs[13] == DELIMITER)
    assert np.all(inputs[14:] == BLANK)  # 10 blanks while recalling
    assert np.all(targets[:14] == BLANK)  # T + 10 blanks
    np.testing.assert_array_equal(targets[14:], symbols)


@pytest.mark.parametrize("T", [1, 10, 100])
def test_copy_baseline_is_the_memoryless_cross_entropy(T):
    """Predicting blank for T + 10 steps and uniform over the 8 symbols after it."""
    problem = CopyProblem(T)
    batch = problem.sample(0, 6)
    logits = torch.full((T + 20, 6, 10), -1e4)
    logits[: T + 10, :, BLANK] = 0.0
    logits[T + 10 :, :, 1:9] = 0.0
    ce = problem.metrics(logits, batch)["cross_entropy"]
    assert math.isclose(ce, memoryless_baseline(T), rel_tol=1e-5)
    assert math.isclose(memoryless_baseline(T), 10 * math.log(8) / (T + 20))


def test_agreement_labels_are_the_subject_number():
    tokens, lengths, labels, distances = agreement_sequences(5, 200, 4)
    singular = {INDEX[s] for s, _ in NOUNS}
    plural = {INDEX[p] for _, p in NOUNS}
    verb_number = {INDEX[w]: n for pair in VERBS for n, w in enumerate(pair)}
    for b in range(200):
        words = tokens[: lengths[b], b]
        assert words[0] == INDEX["the"]
        assert labels[b] == (0 if words[1] in singular else 1) and words[1] in singular | plural
        assert distances[b] == lengths[b] - 2
        for k, w in enumerate(words):  # relative-clause verbs agree with their own subject
            if int(w) in verb_number:
                assert verb_number[int(w)] == (1 if words[k - 1] in plural else 0)
    assert set(distances.tolist()) >= {0, 3, 4, 16}  # modifiers stretch the distance
    assert 0.4 < labels.mean() < 0.6


def test_agreement_hand_checked_sentence_and_metrics():
    tokens, lengths, labels, distances = agreement_sequences(1, 3, 3)
    words = decode(tokens[: lengths[0], 0])
    assert words[:2] == ["the", "farmer"] and labels[0] == 0 and distances[0] == len(words) - 2
    problem = AgreementProblem(3)
    batch = problem.sample(2, 64)
    logits = torch.nn.functional.one_hot(batch.target, 2).float()
    metrics = problem.metrics(logits, batch)
    assert metrics["accuracy"] == 1.0 and problem.solved(metrics)
    assert all(v == 1.0 for k, v in metrics.items() if k.startswith("accuracy_d"))
    full = problem.sample_full(0, 5)
    assert full.lengths is None and full.x.shape[0] == 2 + 3 * 3 + 3 // 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: adding_sequences(0, 2, 9), "T must be an integer >= 10"),
        (lambda: copy_sequences(0, 0, 5), "batch_size must be an integer >= 1"),
        (lambda: agreement_sequences(0.5, 2, 3), "numpy Generator or an int seed"),
    ],
)
def test_bad_arguments_fail_with_a_message(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
