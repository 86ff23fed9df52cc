"""Sampling: masks, top-k / top-p, specials never emitted, seeds, greedy, priming."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.data import train_tokenizer
from rnnkit.data.tokenizers import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from rnnkit.decoding.bernoulli import sample_bernoulli
from rnnkit.decoding.sampling import SampleConfig, encode_prime, filter_logits, generate, sample
from rnnkit.tasks.lm.model import LanguageModel, LMConfig

TOK = train_tokenizer("char", ["hello world, the quick brown fox.\n"])


def model_preferring(token_id: int | None = None) -> LanguageModel:
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(hidden_size=8, num_layers=1, embedding_size=4), TOK.vocab_size)
    if token_id is not None:
        with torch.no_grad():  # the output ignores the state and strongly prefers token_id
            model.decoder.weight.zero_()
            model.decoder.bias.zero_()
            model.decoder.bias[token_id] = 20.0
    return model


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[0.1, 2.0, -1.0, 3.0, 0.5]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True, False]]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 0.99))
def test_top_p_keeps_the_smallest_nucleus(seed, p):
    logits = torch.randn(3, 12, generator=torch.Generator().manual_seed(seed)) * 2
    kept = torch.isfinite(filter_logits(logits, top_p=p))
    probs = logits.softmax(-1)
    for row in range(3):
        order = probs[row].argsort(descending=True)
        mass = probs[row][order].cumsum(0)
        n = int((mass < p).sum()) + 1  # tokens needed to reach p
        expected = torch.zeros(12, dtype=torch.bool)
        expected[order[:n]] = True
        assert torch.equal(kept[row], expected)


def test_specials_are_never_sampled_unless_asked():
    model = model_preferring(UNK_ID)
    config = SampleConfig(max_tokens=50, num_samples=4, stop_at_eos=False)
    ids = torch.cat(list(generate(model, TOK, config)))
    assert not bool(torch.isin(ids, torch.tensor([PAD_ID, UNK_ID, BOS_ID, EOS_ID])).any())
    allowed = SampleConfig(max_tokens=5, allow_unk=True, greedy=True)
    assert all(int(i) == UNK_ID for i in generate(model, TOK, allowed))


def test_eos_ends_a_continuation():
    model = model_preferring(EOS_ID)
    steps = list(generate(model, TOK, SampleConfig(max_tokens=20, greedy=True, num_samples=3)))
    assert len(steps) == 1 and steps[0].tolist() == [EOS_ID] * 3
    never = SampleConfig(max_tokens=5, greedy=True, stop_at_eos=False)
    assert EOS_ID not in torch.cat(list(generate(model, TOK, never))).tolist()


def test_seed_reproduces_and_greedy_is_deterministic():
    model = model_preferring()
    config = SampleConfig(prime="the ", max_tokens=30, num_samples=3, seed=7, temperature=1.5)
    assert sample(model, TOK, config) == sample(model, TOK, config)
    other = SampleConfig(prime="the ", max_tokens=30, num_samples=3, seed=8, temperature=1.5)
    assert sample(model, TOK, config) != sample(model, TOK, other)
    greedy = [SampleConfig(prime="he", max_tokens=20, greedy=True, seed=s) for s in (1, 2)]
    assert sample(model, TOK, greedy[0]) == sample(model, TOK, greedy[1])


def test_batch_rows_match_single_samples_in_greedy_mode():
    model = model_preferring()
    one = sample(model, TOK, SampleConfig(prime="fox", max_tokens=15, greedy=True))
    many = sample(model, TOK, SampleConfig(prime="fox", max_tokens=15, greedy=True, num_samples=3))
    assert many == one * 3


def test_unknown_prime_characters_are_named():
    with pytest.raises(ValueError, match=r"1 character\(s\) not in the model's vocabulary.*'Z'"):
        encode_prime(TOK, "hello Zoo")
    assert encode_prime(TOK, "") == TOK.encode("\n")


@pytest.mark.parametrize(
    "field, value, message",
    [("temperature", 0.0, "temperature must be > 0"), ("top_p", 1.5, r"top_p must be in")],
)
def test_bad_sampling_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        list(generate(model_preferring(), TOK, SampleConfig(**{field: value})))


# --- Bernoulli sampling of binary steps (piano rolls) ------------------------------------


class SharpEcho(torch.nn.Module):
    """Predicts that the next step repeats the current one, almost surely."""

    def forward(self, x, state=None):
        return 40.0 * (2.0 * x - 1.0), state  # logits [T, N, P]: +-40 where x is 1 or 0


def test_bernoulli_sampling_feeds_each_draw_back():
    start = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])  # [1, N=2, P=3]
    model = SharpEcho().train()
    rolls = sample_bernoulli(model, start, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(rolls, start.expand(5, -1, -1))
    assert model.training  # the mode it came in with


def test_bernoulli_sampling_is_seeded_and_checks_its_arguments():
    start = torch.zeros(2, 4, 6)
    flat = SharpEcho()
    hot = dict(temperature=100.0)  # logits / 100: every unit near a fair coin

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return sample_bernoulli(flat, start, 8, generator=generator, **hot)

    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    for kwargs, message in (
        ({"steps": 0}, "steps must be >= 1"),
        ({"steps": 1, "temperature": 0.0}, "temperature must be > 0"),
        ({"steps": 1, "start": torch.zeros(4, 6)}, r"start must be \[T0 >= 1, N, P\]"),
    ):
        with pytest.raises(ValueError, match=message):
            sample_bernoulli(flat, **{"start": start, **kwargs})
