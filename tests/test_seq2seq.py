"""The encoder-decoder and its decoding: attention masking, beam search against exhaustive
search, length normalisation, batched against one-at-a-time, scheduled sampling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnnkit.decoding.beam import (
    NEVER_EMITTED,
    _log_probs,
    beam_search,
    greedy,
    length_penalty,
)
from rnnkit.nn.cells import CELLS
from rnnkit.tasks.seq2seq.model import ATTENTIONS, Seq2Seq, Seq2SeqConfig

SOURCE_VOCAB, TARGET_VOCAB = 9, 6  # 4 specials + 5 / + 2 symbols
EOS = 3


def tiny_model(
    cell: str = "gru", attention: str = "bahdanau", layers: int = 1, sharpen: float = 4.0
) -> Seq2Seq:
    torch.manual_seed(0)
    config = Seq2SeqConfig(
        cell=cell,
        attention=attention,
        embedding_size=5,
        hidden_size=6,
        attention_size=7,
        encoder_layers=layers,
        decoder_layers=layers,
        dropout=0.0,
    )
    model = Seq2Seq(config, SOURCE_VOCAB, TARGET_VOCAB).double()
    with torch.no_grad():  # peaked output distributions, so hypotheses differ clearly
        model.output.weight.mul_(sharpen)
        model.output.bias.mul_(sharpen)
    return model.eval()


def padded_sources() -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([5, 2, 4, 1])
    source = torch.randint(4, SOURCE_VOCAB, (4, 5), generator=torch.Generator().manual_seed(1))
    source[torch.arange(5)[None] >= lengths[:, None]] = 0
    return source, lengths


CASES = [(c, a, n) for c in CELLS for a in ATTENTIONS for n in (1, 2)]


@pytest.mark.parametrize(("cell", "attention", "layers"), CASES)
def test_attention_sums_to_one_and_skips_padding(cell, attention, layers):
    model = tiny_model(cell, attention, layers)
    source, lengths = padded_sources()
    target_in = torch.randint(2, TARGET_VOCAB, (4, 3))
    logits, weights = model(source, lengths, target_in)
    assert logits.shape == (4, 3, TARGET_VOCAB) and weights.shape == (4, 3, 5)
    pad = torch.arange(5)[None, None] >= lengths[:, None, None]  # [B, 1, S]
    assert bool((weights.masked_select(pad.expand_as(weights)) == 0).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 3, dtype=torch.float64))
    # Each padded source gives what it gives alone (nothing leaks from the padding).
    for b in range(4):
        alone, w_alone = model(
            source[b : b + 1, : lengths[b]], lengths[b : b + 1], target_in[b : b + 1]
        )
        torch.testing.assert_close(logits[b : b + 1], alone)
        torch.testing.assert_close(weights[b : b + 1, :, : lengths[b]], w_alone)


@pytest.mark.parametrize(("cell", "attention", "layers"), CASES[::3])
def test_every_parameter_gets_a_gradient(cell, attention, layers):
    model = tiny_model(cell, attention, layers).train()
    source, lengths = padded_sources()
    target = torch.tensor([[4, 5, EOS], [5, EOS, 0], [EOS, 0, 0], [4, 4, EOS]])
    loss, count = model.loss(source, lengths, target, (target != 0).sum(1))
    loss.backward()
    assert count == 9 and math.isfinite(loss.item())
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


@torch.no_grad()
def sequence_log_prob(model: Seq2Seq, source, lengths, tokens: list[int], encoded=None) -> float:
    """log p(tokens | source) stepping the decoder one token at a time (the oracle)."""
    memory, state = encoded or model.encode(source, lengths)
    previous, total = torch.tensor([2]), 0.0
    for token in tokens:
        logits, state, _ = model.step(previous, state, memory)
        total += float(_log_probs(logits)[0, token])
        previous = torch.tensor([token])
    return total


def exhaustive_best(model, source, lengths, max_length: int, alpha: float):
    """The best hypothesis over every output of at most max_length tokens."""
    emitted = [t for t in range(TARGET_VOCAB) if t not in NEVER_EMITTED and t != EOS]
    candidates = [
        [*p, EOS] for n in range(max_length) for p in itertools.product(emitted, repeat=n)
    ]
    candidates += [list(p) for p in itertools.product(emitted, repeat=max_length)]
    best, encoded = None, model.encode(source, lengths)
    for tokens in candidates:
        score = sequence_log_prob(model, source, lengths, tokens, encoded)
        normalised = score / length_penalty(len(tokens), alpha)
        if best is None or normalised > best[0]:
            best = (normalised, score, tokens)
    return best


@pytest.mark.parametrize(("attention", "alpha"), [("bahdanau", 0.0), ("luong", 1.0)])
def test_beam_as_wide_as_the_space_finds_the_exhaustive_best(attention, alpha):
    model = tiny_model("gru", attention, sharpen=1.5)
    source, lengths = padded_sources()
    L = 3
    K = TARGET_VOCAB**L  # beam width = vocabulary ** length: nothing is ever pruned
    with torch.no_grad():
        memory, state = model.encode(source, lengths)
    found = beam_search(model, memory, state, 4, K, L, alpha, n_best=3)
    for b in range(4):
        normalised, score, tokens = exhaustive_best(
            model, source[b : b + 1], lengths[b : b + 1], L, alpha
        )
        top = found[b][0]
        assert top.tokens + ([EOS] if top.finished else []) == tokens
        assert top.score == pytest.approx(score, abs=1e-9)
        assert top.normalised == pytest.approx(normalised, abs=1e-9)
        assert [h.normalised for h in found[b]] == sorted(
            (h.normalised for h in found[b]), reverse=True
        )


class TableDecoder:
    """A decoder whose next-token distribution depends only on the previous token."""

    def __init__(self, table: dict[int, dict[int, float]]) -> None:
        self.table = table

    def step(self, previous, state, memory):
        logits = torch.full((len(previous), 5), -30.0, dtype=torch.float64)
        for row, token in enumerate(previous.tolist()):
            for nxt, p in self.table.get(token, {EOS: 1.0}).items():
                logits[row, nxt] = math.log(p)
        return logits, state, torch.ones(len(previous), 1)


class NoMemory:
    def repeat(self, k: int) -> NoMemory:
        return self


def test_length_normalisation_prefers_longer_outputs_as_alpha_grows():
    # From <bos>: <eos> 0.52 or "a" 0.48; after "a": <eos> 0.99. Unnormalised, the empty
    # output wins (-0.654 > -0.744); divided by lp, "a" wins for alpha = 1.
    decoder = TableDecoder({2: {EOS: 0.52, 4: 0.48}, 4: {EOS: 0.99, 4: 0.01}})
    state = ((torch.zeros(1),),)
    short, long = math.log(0.52), math.log(0.48) + math.log(0.99)
    for alpha, expected, score in ((0.0, [], short), (1.0, [4], long)):
        best = beam_search(decoder, NoMemory(), state, 1, 2, 5, alpha)[0][0]
        assert best.tokens == expected and best.finished
        assert best.score == pytest.approx(score)
        assert best.normalised == pytest.approx(score / length_penalty(len(expected) + 1, alpha))
    assert length_penalty(1, 1.0) == 1.0 and length_penalty(7, 0.6) == pytest.approx(2**0.6)
    assert greedy(decoder, NoMemory(), state, 1, 5)[0].tokens == []  # greedy takes <eos>


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_batched_decoding_equals_one_at_a_time(attention, beam):
    model = tiny_model("lstm", attention, layers=2)
    source, lengths = padded_sources()

    def run(src, lens):
        memory, state = model.encode(src, lens)
        if beam == 1:
            return greedy(model, memory, state, len(src), 6)
        return [h[0] for h in beam_search(model, memory, state, len(src), beam, 6, 0.6)]

    together = run(source, lengths)
    for b in range(4):
        (alone,) = run(source[b : b + 1, : lengths[b]], lengths[b : b + 1])
        assert together[b].tokens == alone.tokens
        assert together[b].score == pytest.approx(alone.score, abs=1e-9)
        torch.testing.assert_close(together[b].attention[:, : lengths[b]], alone.attention)
        assert bool((together[b].attention[:, lengths[b] :] == 0).all())


def test_greedy_scores_are_the_sum_of_step_log_probs():
    model = tiny_model("gru_reset_before", "luong")
    source, lengths = padded_sources()
    memory, state = model.encode(source, lengths)
    for b, h in enumerate(greedy(model, memory, state, 4, 6)):
        tokens = h.tokens + ([EOS] if h.finished else [])
        expected = sequence_log_prob(model, source[b : b + 1], lengths[b : b + 1], tokens)
        assert h.score == pytest.approx(expected, abs=1e-9)
        assert h.attention.shape == (len(tokens), 5)


def test_scheduled_sampling_at_rate_one_feeds_the_models_own_tokens():
    model = tiny_model("gru", "bahdanau")
    source, lengths = padded_sources()
    gold = torch.full((4, 5), 4)
    gold[:, 0] = 2  # <bos>, then "4 4 4 4" that sampling at rate 1 ignores
    logits, _ = model(source, lengths, gold, sampling=1.0)
    memory, state = model.encode(source, lengths)
    previous = torch.full((4,), 2)
    for t in range(5):  # the greedy loop without blocking specials: the same argmaxes
        step_logits, state, _ = model.step(previous, state, memory)
        torch.testing.assert_close(logits[:, t], step_logits)
        previous = step_logits.argmax(1)
    teacher, _ = model(source, lengths, gold, sampling=0.0)
    assert not torch.allclose(teacher, logits)


def test_config_validation():
    with pytest.raises(ValueError, match="sampling must be in"):
        Seq2Seq(Seq2SeqConfig(sampling=1.5), 5, 5)
    with pytest.raises(ValueError, match="beam, n_best and max_length"):
        model = tiny_model()
        memory, state = model.encode(*padded_sources())
        beam_search(model, memory, state, 4, 0, 5)
