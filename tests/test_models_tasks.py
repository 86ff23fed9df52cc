"""The classifier and tagger models: padding never changes a result, every pooling and
output layer trains, pretrained vectors load."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data.padded import length_mask, pad
from rnnkit.data.text import DataError
from rnnkit.tasks.classify.config import POOLINGS
from rnnkit.tasks.classify.model import Classifier, ClassifierConfig
from rnnkit.tasks.classify.vectors import load_vectors
from rnnkit.tasks.tag import allowed_transitions
from rnnkit.tasks.tag.model import Tagger, TaggerConfig


def _padded(ids: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.cat([ids, torch.zeros(ids.shape[0], extra, dtype=ids.dtype)], dim=1)


def test_length_mask_marks_the_unpadded_steps():
    ids, lengths = pad([[5, 6, 7], [8], [9, 9]])
    assert length_mask(lengths, ids.shape[1]).tolist() == [
        [True, True, True],
        [True, False, False],
        [True, True, False],
    ]
    assert torch.equal(length_mask(lengths, ids.shape[1]), ids != 0)


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", ["lstm", "gru_reset_before"])
def test_classifier_ignores_padding(pooling: str, cell: str):
    torch.manual_seed(0)
    config = ClassifierConfig(
        cell=cell, hidden_size=8, embedding_size=6, pooling=pooling, num_layers=2
    )
    model = Classifier(config, vocab_size=20, num_labels=3).eval()
    ids = torch.randint(1, 20, (4, 5))
    lengths = torch.tensor([5, 3, 1, 4])
    ids[torch.arange(5)[None] >= lengths[:, None]] = 0
    logits = model(ids, lengths)
    assert logits.shape == (4, 3)
    torch.testing.assert_close(model(_padded(ids, 3), lengths), logits)
    alone = model(ids[1:2, :3], lengths[1:2])  # the second sentence with no padding at all
    torch.testing.assert_close(alone, logits[1:2])


def test_classifier_learns_a_toy_rule():
    """Label = whether token 3 occurs: reachable by every pooling in a few steps."""
    torch.manual_seed(0)
    model = Classifier(ClassifierConfig(hidden_size=16, embedding_size=8, dropout=0.0), 10, 2)
    ids = torch.randint(4, 10, (64, 6))
    labels = torch.randint(0, 2, (64,))
    ids[labels == 1, 2] = 3
    lengths = torch.full((64,), 6)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(ids, lengths), labels)
        loss.backward()
        optimiser.step()
    assert (model(ids, lengths).argmax(1) == labels).float().mean() == 1.0


@pytest.mark.parametrize("output", ["crf", "softmax"])
@pytest.mark.parametrize("chars", [True, False])
def test_tagger_padding_and_training(output: str, chars: bool):
    torch.manual_seed(0)
    names = ["O", "B-PER", "I-PER"]
    config = TaggerConfig(
        hidden_size=8,
        embedding_size=6,
        char_embedding_size=4 if chars else 0,
        char_hidden_size=3,
        output=output,
        dropout=0.0,
    )
    model = Tagger(config, 15, 12, len(names), allowed_transitions(names, "IOB2"))
    words = torch.randint(1, 15, (3, 4))
    char_ids = torch.randint(1, 12, (3, 4, 5))
    lengths = torch.tensor([4, 2, 3])
    pad = torch.arange(4)[None] >= lengths[:, None]
    words[pad] = 0
    char_ids[pad] = 0
    char_ids[0, 0, 2:] = 0  # a short word
    tags = torch.randint(0, 3, (3, 4))
    tags[:, 0] = 1  # start with B-PER: a valid IOB2 sequence start
    tags[tags == 2] = 1
    c = char_ids if chars else None
    scores = model.emissions(words, c, lengths)
    padded_scores = model.emissions(
        _padded(words, 2),
        torch.cat([char_ids, torch.zeros(3, 2, 5, dtype=torch.long)], 1) if chars else None,
        lengths,
    )
    torch.testing.assert_close(padded_scores[:, :4], scores)
    paths = model.decode(words, c, lengths)
    assert [len(p) for p in paths] == [4, 2, 3]
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    first = model.loss(words, c, lengths, tags).item()
    for _ in range(40):
        optimiser.zero_grad()
        model.loss(words, c, lengths, tags).backward()
        optimiser.step()
    assert model.loss(words, c, lengths, tags).item() < first / 4
    assert model.decode(words, c, lengths) == [
        t[:n].tolist() for t, n in zip(tags, lengths, strict=True)
    ]


def test_tagger_needs_chars_when_configured():
    model = Tagger(TaggerConfig(hidden_size=4, embedding_size=4), 5, 5, 2)
    with pytest.raises(ValueError, match="pass chars"):
        model.emissions(torch.ones(1, 2, dtype=torch.long), None, torch.tensor([2]))


def test_load_vectors(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("3 2\nthe 0.5 -1\ncat 2 3\nzebra 1 1\n", encoding="utf-8")
    embedding = torch.zeros(4, 2)
    found = load_vectors(path, {"the": 1, "cat": 3, "dog": 2}, embedding)
    assert found == 2
    assert embedding.tolist() == [[0, 0], [0.5, -1], [0, 0], [2, 3]]
    bad = tmp_path / "bad.txt"
    bad.write_text("the 0.5 -1 2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.txt:1: 3 values, expected 2"):
        load_vectors(bad, {"the": 0}, torch.zeros(1, 2))


def test_softmax_tagger_loss_is_per_sentence_like_the_crf():
    """Token losses summed over each sentence, averaged over sentences (not over tokens),
    as the CRF's negative log-likelihood is."""
    torch.manual_seed(0)
    config = TaggerConfig(
        hidden_size=8, embedding_size=6, char_embedding_size=0, output="softmax", dropout=0.0
    )
    model = Tagger(config, 15, 12, 3)
    words, lengths = torch.randint(1, 15, (3, 4)), torch.tensor([4, 2, 3])
    tags = torch.randint(0, 3, (3, 4))
    scores = model.emissions(words, None, lengths)
    per_sentence = [
        torch.nn.functional.cross_entropy(scores[b, :n], tags[b, :n], reduction="sum")
        for b, n in enumerate(lengths.tolist())
    ]
    expected = torch.stack(per_sentence).mean()
    torch.testing.assert_close(model.loss(words, None, lengths, tags), expected)
