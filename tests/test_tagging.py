"""Tag schemes, conlleval span F1 on hand-worked cases, and the CRF against brute force."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnkit.tasks.tag import (
    CRF,
    TagError,
    allowed_transitions,
    convert,
    span_scores,
    spans,
    validate,
)


def test_spans_iob1_edge_cases():
    # IOB1: I after O starts a chunk; B-X splits two adjacent chunks of type X.
    assert spans(["I-PER", "I-PER", "B-PER", "O", "I-LOC"]) == [
        ("PER", 0, 2),
        ("PER", 2, 3),
        ("LOC", 4, 5),
    ]
    # A type change inside I- tags starts a new chunk.
    assert spans(["I-ORG", "I-LOC", "I-LOC"]) == [("ORG", 0, 1), ("LOC", 1, 3)]
    # conlleval reads a stray I-X after B-Y as a new chunk.
    assert spans(["B-PER", "I-LOC"]) == [("PER", 0, 1), ("LOC", 1, 2)]


def test_spans_iob2_and_bioes():
    assert spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]) == [
        ("PER", 0, 2),
        ("LOC", 3, 4),
        ("LOC", 4, 5),
    ]
    assert spans(["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"]) == [("PER", 0, 1), ("LOC", 1, 4)]


@pytest.mark.parametrize("to", ["IOB1", "IOB2", "BIOES"])
def test_conversion_keeps_chunks(to: str):
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG", "O", "I-MISC"]
    converted = convert(iob1, to)
    validate(converted, to)
    assert spans(converted) == spans(iob1)
    assert convert(converted, "IOB1") == iob1


def test_conversion_examples():
    iob1 = ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    assert convert(iob1, "IOB2") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert convert(iob1, "BIOES") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]


def test_invalid_tags():
    with pytest.raises(TagError, match=r"tag 'E-PER' at position 1 is not valid in IOB2"):
        validate(["B-PER", "E-PER"], "IOB2")
    with pytest.raises(TagError, match="malformed tag 'PER'"):
        validate(["PER"], "IOB1")
    with pytest.raises(ValueError, match="tag scheme must be one of"):
        validate(["O"], "BILOU")


def test_span_f1_hand_worked():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-LOC"]]
    # gold chunks: PER(0,2) LOC(3,4) | ORG(0,1): 3; predicted: PER ORG | ORG LOC: 4
    # correct: PER(0,2), ORG(0,1) of sentence 2 -> 2
    scores = span_scores(gold, pred)
    assert (scores.overall.correct, scores.overall.predicted, scores.overall.gold) == (2, 4, 3)
    assert scores.overall.precision == pytest.approx(0.5)
    assert scores.overall.recall == pytest.approx(2 / 3)
    assert scores.overall.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores.by_type["PER"].f1 == 1.0
    assert scores.by_type["LOC"].precision == 0.0 and scores.by_type["LOC"].recall == 0.0
    assert scores.by_type["ORG"].precision == 0.5 and scores.by_type["ORG"].recall == 1.0
    assert scores.token_accuracy == pytest.approx(4 / 6)
    assert "FB1:" in scores.report()


def test_span_f1_boundary_must_match():
    # A chunk with the right type but the wrong end is wrong (exact match only).
    scores = span_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])
    assert scores.overall.correct == 0 and scores.overall.f1 == 0.0


def test_span_f1_length_mismatch():
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        span_scores([["O", "O"]], [["O"]])


def _random_crf(K: int, seed: int, constraints=None) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(K, *(constraints or ())).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def _brute_force(crf: CRF, emissions: torch.Tensor, length: int):
    """Every tag sequence of one sentence: (log Z, best path)."""
    scores = {}
    mask = torch.ones(1, length, dtype=torch.bool)
    for path in itertools.product(range(crf.num_tags), repeat=length):
        tags = torch.tensor([path])
        scores[path] = crf.score(emissions[None, :length], tags, mask)[0]
    log_z = torch.logsumexp(torch.stack(list(scores.values())), 0)
    return log_z, list(max(scores, key=lambda p: scores[p]))


@pytest.mark.parametrize("seed", range(3))
def test_crf_matches_brute_force(seed: int):
    K, T = 3, 4
    crf = _random_crf(K, seed)
    emissions = torch.randn(3, T, K, dtype=torch.float64)
    lengths = [4, 2, 1]
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    log_z = crf.log_partition(emissions, mask)
    paths = crf.decode(emissions, mask)
    for b, L in enumerate(lengths):
        expected_z, expected_path = _brute_force(crf, emissions[b], L)
        assert log_z[b].item() == pytest.approx(expected_z.item(), rel=1e-12)
        assert paths[b] == expected_path
    tags = torch.randint(0, K, (3, T))
    nll = crf.neg_log_likelihood(emissions, tags, mask)
    assert torch.all(nll > 0)  # a probability below one
    nll.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in crf.parameters())


def test_crf_constraints_forbid_invalid_sequences():
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    crf = _random_crf(len(names), 0, allowed_transitions(names, "IOB2"))
    torch.manual_seed(1)
    emissions = torch.randn(20, 6, len(names), dtype=torch.float64) * 3
    mask = torch.ones(20, 6, dtype=torch.bool)
    for path in crf.decode(emissions, mask):
        tags = [names[i] for i in path]
        assert tags[0] not in ("I-PER", "I-LOC")
        for prev, cur in itertools.pairwise(tags):
            if cur.startswith("I-"):
                assert prev[2:] == cur[2:] and prev != "O", tags


def test_bioes_constraints():
    names = ["O", "B-X", "I-X", "E-X", "S-X"]
    allowed, may_start, may_end = allowed_transitions(names, "BIOES")
    index = {n: i for i, n in enumerate(names)}
    assert allowed[index["B-X"]][index["E-X"]] and not allowed[index["B-X"]][index["O"]]
    assert allowed[index["E-X"]][index["S-X"]] and not allowed[index["O"]][index["I-X"]]
    assert may_start == [True, True, False, False, True]
    assert may_end == [True, False, False, True, True]


def test_crf_input_checks():
    crf = CRF(3)
    with pytest.raises(ValueError, match=r"emissions must be \[B, T, K\]"):
        crf.log_partition(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one token"):
        crf.log_partition(torch.zeros(1, 2, 3), torch.tensor([[False, False]]))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_char_features_skip_padding_words_and_agree(cell):
    """Only real words run through the char BiRNN; their features equal running every
    B * T slot (padding words included) as one batch, and padding words get zeros."""
    from rnnkit.tasks.tag.model import Tagger, TaggerConfig

    torch.manual_seed(0)
    config = TaggerConfig(
        cell=cell, hidden_size=6, embedding_size=5, char_embedding_size=4, char_hidden_size=3
    )
    model = Tagger(config, vocab_size=20, char_vocab_size=12, num_tags=5).double()
    word_lengths = torch.tensor([[3, 1, 5], [2, 0, 0]])  # sentence 2 has 1 word
    chars = torch.zeros(2, 3, 6, dtype=torch.long)
    for b, t in itertools.product(range(2), range(3)):
        n = int(word_lengths[b, t])
        chars[b, t, :n] = torch.randint(1, 12, (n,))
    features = model._char_features(chars)  # [B, T, 2 * Hc]
    flat = chars.reshape(6, 6)
    _, final = model.char_rnn(model.char_embedding(flat), lengths=(flat != 0).sum(1))
    h_n = final[0] if cell == "lstm" else final  # [2, B * T, Hc]
    every_slot = torch.cat([h_n[0], h_n[1]], dim=1).reshape(2, 3, -1)
    real = word_lengths > 0
    torch.testing.assert_close(features[real], every_slot[real], rtol=1e-12, atol=1e-12)
    assert (features[~real] == 0).all()
